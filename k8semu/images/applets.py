"""Applets for the shell images: ``wget``, ``nslookup``, ``nc`` as busybox has them (a subset).

``python -m k8semu.images.applets NAME ARGS...``. Each resolves host names through the cluster
DNS when K8SEMU_DNS_SERVER (host:port) is set, trying the K8SEMU_DNS_SEARCH domains first for
short names (a pod's resolv.conf), else through the system resolver. Synchronous on purpose:
each applet run is one short-lived process.

- ``wget [-q] [-O FILE|-] [-T SECONDS] [-S] [--spider] [--header H] URL`` (http only; follows
  up to 5 redirects; exit 1 on an HTTP error, like busybox: "server returned error").
- ``nslookup NAME [SERVER[:PORT]]`` (A and AAAA; exit 1 when not found).
- ``nc [-z] [-v] [-w SECONDS] [-u] HOST PORT`` (-z: connect test; else stdin to the peer and the
  peer's answer to stdout).
- ``dig [@SERVER] NAME [TYPE] [+short] [+search]`` (`_dig.py`).
- ``curl [-sSfiIvL] [-X METHOD] [-H H] [-d DATA] [-o FILE] [-m SECONDS] URL`` (http only; curl's
  exit codes 6, 7, 22, 28).
- ``hostname [-s]``: the pod's host name (env HOSTNAME), not the machine's.

``localhost`` is the pod's own IP (env ``POD_IP``): in Kubernetes a pod's loopback is its own.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import select
import socket
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from k8semu.images import _dig
from k8semu.images import _dnswire as w

APPLETS = ("wget", "nslookup", "nc", "curl", "dig", "hostname")


class AppletError(Exception):
    """Message for stderr; exit code 1."""


def _dns(env: Mapping[str, str]) -> tuple[tuple[str, int] | None, list[str]]:
    server = env.get("K8SEMU_DNS_SERVER", "").strip()
    return (w.parse_server(server) if server else None), env.get("K8SEMU_DNS_SEARCH", "").split()


def _candidates(name: str, search: Sequence[str]) -> list[str]:
    if name.endswith("."):
        return [name.rstrip(".")]
    short = [f"{name}.{domain}" for domain in search] if name.count(".") < 5 else []
    return [*short, name]


def lookup(
    name: str, env: Mapping[str, str], timeout: float = 2.0, server: tuple[str, int] | None = None
) -> tuple[str, list[str]]:
    """(the name that answered, its addresses); empty list when nothing answered."""
    if name.rstrip(".").lower() == "localhost" and env.get("POD_IP"):
        return name, [env["POD_IP"]]
    with contextlib.suppress(ValueError):
        return name, [str(ipaddress.ip_address(name.strip("[]")))]
    dns_server, search = _dns(env)
    dns_server = server or dns_server
    if dns_server is not None:
        for candidate in _candidates(name, search):
            found: list[str] = []
            for qtype in (w.A, w.AAAA):
                try:
                    reply = w.query_sync(dns_server, candidate, qtype, timeout)
                except (OSError, w.DNSFormatError):
                    continue
                found.extend(w.addresses(reply))
            if found:
                return candidate, found
        if server is not None:
            return name, []
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        return name, []
    return name, list(dict.fromkeys(str(i[4][0]) for i in infos))


def _resolve_one(host: str, env: Mapping[str, str], timeout: float) -> str:
    _, addrs = lookup(host, env, timeout)
    if not addrs:
        raise AppletError(f"bad address '{host}'")
    return addrs[0]


# ---- wget ----


@dataclass
class _WgetArgs:
    url: str | None = None
    quiet: bool = False
    spider: bool = False
    show_headers: bool = False
    output: str | None = None
    timeout: float = 30.0
    headers: dict[str, str] = field(default_factory=dict)


def _wget_short_flags(word: str, args: list[str], i: int, out: _WgetArgs) -> int:
    """Apply a word of short flags (``-qO-``, ``-T 5``); returns the index of the last word
    it used (the next one when a flag's value is there)."""
    for j, flag in enumerate(word[1:], 1):
        if flag in "OT":  # the value is the rest of this word, or the next word
            value = word[j + 1 :]
            if not value:
                i += 1
                value = args[i] if i < len(args) else ""
            if flag == "O":
                out.output = value
            else:
                out.timeout = float(value)
            break
        if flag == "q":
            out.quiet = True
        elif flag == "S":
            out.show_headers = True
        elif flag == "s":  # busybox's old synonym of --spider
            out.spider = True
        else:
            raise AppletError(f"unrecognized option '-{flag}'")
    return i


def _wget_args(argv: Sequence[str]) -> _WgetArgs:
    out = _WgetArgs()
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            i += 1
            continue
        if a == "--output-document":
            i += 1
            out.output = args[i] if i < len(args) else None
        elif a.startswith("--output-document="):
            out.output = a.split("=", 1)[1]
        elif a == "--timeout":
            i += 1
            out.timeout = float(args[i])
        elif a.startswith("--timeout="):
            out.timeout = float(a.split("=", 1)[1])
        elif a == "--spider":
            out.spider = True
        elif a == "--header":
            i += 1
            name, _, value = args[i].partition(":")
            out.headers[name.strip()] = value.strip()
        elif a.startswith("-") and len(a) > 1 and not a.startswith("--"):
            i = _wget_short_flags(a, args, i, out)
        elif a.startswith("--"):
            pass  # -Y, --no-check-certificate, ...: nothing to do over plain http
        else:
            out.url = a
        i += 1
    return out


def _wget_fetch(url: str, opts: _WgetArgs, env: Mapping[str, str]) -> tuple[str, bytes]:
    """GET (HEAD for --spider) ``url``, following up to 5 redirects: the final URL and the
    body. AppletError on a connection failure or an HTTP error, as busybox has them."""
    body = b""
    for _ in range(6):
        parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme != "http" or not parts.hostname:
            raise AppletError(f"unsupported URL '{url}' (only http:// here)")
        port = parts.port or 80
        address = _resolve_one(parts.hostname, env, opts.timeout)
        if not opts.quiet:
            print(f"Connecting to {parts.netloc} ({address}:{port})", file=sys.stderr)
        conn = http.client.HTTPConnection(address, port, timeout=opts.timeout)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request(
                "HEAD" if opts.spider else "GET",
                path,
                headers={"Host": parts.netloc, "User-Agent": "Wget (k8semu)", **opts.headers},
            )
            resp = conn.getresponse()
            body = resp.read() if not opts.spider else b""
        except (OSError, http.client.HTTPException) as exc:
            raise AppletError(f"can't connect to remote host ({address}): {exc}") from None
        finally:
            conn.close()
        if opts.show_headers:
            print(f"  HTTP/1.1 {resp.status} {resp.reason}", file=sys.stderr)
            for k, v in resp.getheaders():
                print(f"  {k}: {v}", file=sys.stderr)
        location = resp.getheader("Location")
        if resp.status in (301, 302, 303, 307, 308) and location:
            url = urllib.parse.urljoin(url, location)
            continue
        if resp.status >= 400:
            raise AppletError(f"server returned error: HTTP/1.1 {resp.status} {resp.reason}")
        return url, body
    raise AppletError("too many redirects")


def wget(argv: Sequence[str], env: Mapping[str, str]) -> int:
    opts = _wget_args(argv)
    if opts.url is None:
        raise AppletError("missing URL\nUsage: wget [-q] [-O FILE] [-T SEC] [--spider] URL")
    url, body = _wget_fetch(opts.url, opts, env)
    if opts.spider:
        if not opts.quiet:
            print("remote file exists", file=sys.stderr)
        return 0
    output = opts.output
    if output is None:
        output = os.path.basename(urllib.parse.urlsplit(url).path) or "index.html"
    if output == "-":
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    else:
        with open(output, "wb") as f:
            f.write(body)
        if not opts.quiet:
            print(f"saving to '{output}'", file=sys.stderr)
    return 0


# ---- nslookup ----


def nslookup(argv: Sequence[str], env: Mapping[str, str]) -> int:
    args = [a for a in argv if not a.startswith("-")]
    if not args:
        raise AppletError("Usage: nslookup NAME [SERVER]")
    name = args[0]
    server: tuple[str, int] | None = None
    if len(args) > 1:
        try:
            server = w.parse_server(args[1])
        except ValueError:
            raise AppletError(f"bad server '{args[1]}'") from None
        resolved = lookup(server[0], env)[1]  # an address is its own answer
        if not resolved:
            raise AppletError(f"can't resolve '{server[0]}'")
        server = (resolved[0], server[1])
    shown = server or _dns(env)[0]
    if shown is not None:
        print(f"Server:\t\t{shown[0]}\nAddress:\t{shown[0]}:{shown[1]}\n")
    else:
        print("Server:\t\t(system resolver)\n")
    answered, addrs = lookup(name, env, server=server)
    if not addrs:
        print(f"** server can't find {name}: NXDOMAIN\n")
        return 1
    print(f"Name:\t{answered}")
    for addr in addrs:
        print(f"Address: {addr}")
    print()
    return 0


# ---- nc ----


def nc(argv: Sequence[str], env: Mapping[str, str]) -> int:
    zero = verbose = udp = False
    timeout: float | None = None
    positional: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and len(a) > 1:
            for j, flag in enumerate(a[1:]):
                if flag == "z":
                    zero = True
                elif flag == "v":
                    verbose = True
                elif flag == "u":
                    udp = True
                elif flag == "w":
                    rest = a[2 + j :]
                    if rest:
                        timeout = float(rest)
                    else:
                        i += 1
                        timeout = float(args[i])
                    break
                elif flag in "nN":
                    pass
                else:
                    raise AppletError(f"unsupported option -{flag}")
        else:
            positional.append(a)
        i += 1
    if len(positional) != 2 or not positional[1].isdigit():
        raise AppletError("Usage: nc [-z] [-v] [-w SEC] [-u] HOST PORT")
    host, port = positional[0], int(positional[1])
    address = _resolve_one(host, env, timeout or 2.0)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    sock = socket.socket(family, kind)
    sock.settimeout(timeout if timeout is not None else 10.0)
    try:
        sock.connect((address, port))
    except OSError as exc:
        if verbose:
            print(f"nc: {host} ({address}:{port}): {exc.strerror or exc}", file=sys.stderr)
        sock.close()
        return 1
    if verbose:
        print(f"{host} ({address}:{port}) open", file=sys.stderr)
    if zero:
        sock.close()
        return 0
    sock.settimeout(None)
    try:
        _pump(sock, timeout)
    finally:
        sock.close()
    return 0


def _pump(sock: socket.socket, idle: float | None) -> None:
    stdin_open = True
    stdin = sys.stdin.buffer.fileno()
    while True:
        readers = [sock] + ([stdin] if stdin_open else [])
        ready, _, _ = select.select(readers, [], [], idle)
        if not ready:
            return
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        if stdin in ready:
            data = os.read(stdin, 65536)
            if not data:
                stdin_open = False
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
            else:
                sock.sendall(data)


# ---- curl ----


@dataclass
class _CurlArgs:
    url: str = ""
    method: str = ""
    #: The switches given, by their short letter: s S f i v L.
    switches: set[str] = field(default_factory=set)
    output: str = ""
    timeout: float = 30.0
    data: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


_CURL_SWITCHES = "sSfivL"
_CURL_LONG = {"--silent": "s", "--show-error": "S", "--fail": "f", "--include": "i",
              "--verbose": "v", "--location": "L", "--head": "I", "--request": "X",
              "--header": "H", "--data": "d", "--data-raw": "d", "--output": "o",
              "--max-time": "m", "--connect-timeout": "m"}  # fmt: skip


def _curl_value(out: _CurlArgs, flag: str, value: str) -> None:
    if flag == "X":
        out.method = value
    elif flag == "H":
        name, _, text = value.partition(":")
        out.headers[name.strip()] = text.strip()
    elif flag == "d":
        out.data = (out.data + b"&" if out.data else b"") + value.encode()
    elif flag == "o":
        out.output = value
    else:  # m
        out.timeout = float(value)


def _curl_args(argv: Sequence[str]) -> _CurlArgs:
    out, args, i = _CurlArgs(), list(argv), 0
    while i < len(args):
        word = _CURL_LONG.get(args[i], args[i])
        if not word.startswith("-") or word == "-":
            out.url = word
        else:
            for j, flag in enumerate(word.lstrip("-") if len(word) > 1 else ""):
                if flag in _CURL_SWITCHES:
                    out.switches.add(flag)
                elif flag == "I":
                    out.method = "HEAD"
                elif flag in "XHdom":
                    rest = word[1 + j + 1 :] if not args[i].startswith("--") else ""
                    if not rest:
                        i += 1
                        rest = args[i]
                    _curl_value(out, flag, rest)
                    break
                else:
                    raise AppletError(f"option {args[i]}: is unknown")
        i += 1
    if not out.url:
        raise AppletError("no URL specified")
    return out


def _curl_once(url: str, opts: _CurlArgs, env: Mapping[str, str]) -> http.client.HTTPResponse:
    parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme != "http" or not parts.hostname:
        raise _CurlError(1, f'Protocol "{parts.scheme}" not supported (only http:// here)')
    port = parts.port or 80
    _, addrs = lookup(parts.hostname, env, min(opts.timeout, 5.0))
    if not addrs:
        raise _CurlError(6, f"Could not resolve host: {parts.hostname}")
    conn = http.client.HTTPConnection(addrs[0], port, timeout=opts.timeout)
    method = opts.method or ("POST" if opts.data is not None else "GET")
    headers = {"Host": parts.netloc, "User-Agent": "curl/8.5.0 (k8semu)", "Accept": "*/*"}
    if opts.data is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if "v" in opts.switches:
        print(f"* Connected to {parts.hostname} ({addrs[0]}) port {port}", file=sys.stderr)
        print(f"> {method} {path} HTTP/1.1", file=sys.stderr)
    try:
        conn.request(method, path, body=opts.data, headers={**headers, **opts.headers})
        return conn.getresponse()
    except TimeoutError:
        raise _CurlError(28, f"Operation timed out after {opts.timeout:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise _CurlError(7, f"Failed to connect to {parts.hostname} port {port}: {why}") from None


class _CurlError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _curl_fetch(opts: _CurlArgs, env: Mapping[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
    url = opts.url
    for _ in range(10):
        resp = _curl_once(url, opts, env)
        body = resp.read() if opts.method != "HEAD" else b""
        location = resp.getheader("Location")
        if not ("L" in opts.switches and location and resp.status in (301, 302, 303, 307, 308)):
            return resp, body
        url = urllib.parse.urljoin(url, location)
    raise _CurlError(47, "Maximum (10) redirects followed")


def curl(argv: Sequence[str], env: Mapping[str, str]) -> int:
    opts = _curl_args(argv)
    try:
        resp, body = _curl_fetch(opts, env)
        if "f" in opts.switches and resp.status >= 400:
            raise _CurlError(22, f"The requested URL returned error: {resp.status}")
    except _CurlError as exc:
        if "s" not in opts.switches or "S" in opts.switches:
            print(f"curl: ({exc.code}) {exc}", file=sys.stderr)
        return exc.code
    head = b""
    if "i" in opts.switches or opts.method == "HEAD":
        lines = [f"HTTP/1.1 {resp.status} {resp.reason}"]
        lines += [f"{k}: {v}" for k, v in resp.getheaders()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if opts.output and opts.output != "-":
        with open(opts.output, "wb") as f:
            f.write(head + body)
    else:
        sys.stdout.buffer.write(head + body)
        sys.stdout.flush()
    return 0


def hostname(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """The pod's host name (HOSTNAME, which the kubelet sets: spec.hostname or the pod's
    name), not the machine's: `kubectl exec web-0 -- hostname` says web-0."""
    name = env.get("HOSTNAME") or socket.gethostname()
    print(name.split(".", 1)[0] if "-s" in argv else name)
    return 0


COMMANDS: dict[str, Callable[[Sequence[str], Mapping[str, str]], int]] = {
    "wget": wget,
    "nslookup": nslookup,
    "nc": nc,
    "curl": curl,
    "dig": _dig.dig,
    "hostname": hostname,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(f"usage: applets {{{','.join(APPLETS)}}} ARGS...", file=sys.stderr)
        return 2
    name = args[0]
    try:
        return COMMANDS[name](args[1:], dict(os.environ))
    except AppletError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except (ValueError, IndexError) as exc:
        print(f"{name}: bad arguments: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
