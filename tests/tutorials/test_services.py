"""The Services tutorials, followed as written with kubectl:

- "Use a Service to Access an Application in a Cluster" (echoserver:1.10 behind a NodePort
  Service, curl to a node's IP and the node port);
- "Connecting Applications with Services" (nginx, the Service's environment variables in a
  new pod, the cluster DNS from a `radial/busyboxplus:curl` pod);
- "Debugging DNS Resolution" (the dnsutils pod, `nslookup kubernetes.default`, the kube-dns
  Service, endpoints and pods).

Manifests are the tutorials' files, given on stdin (no internet here)."""

from __future__ import annotations

from .conftest import Tutorial, http_get, until

HELLO_APPLICATION = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello-world
spec:
  selector:
    matchLabels:
      run: load-balancer-example
  replicas: 2
  template:
    metadata:
      labels:
        run: load-balancer-example
    spec:
      containers:
        - name: hello-world
          image: registry.k8s.io/echoserver:1.10
          ports:
            - containerPort: 8080
              protocol: TCP
"""
RUN_MY_NGINX = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-nginx
spec:
  selector:
    matchLabels:
      run: my-nginx
  replicas: 2
  template:
    metadata:
      labels:
        run: my-nginx
    spec:
      containers:
      - name: my-nginx
        image: nginx
        ports:
        - containerPort: 80
"""
DNSUTILS = """\
apiVersion: v1
kind: Pod
metadata:
  name: dnsutils
  namespace: default
spec:
  containers:
  - name: dnsutils
    image: registry.k8s.io/e2e-test-images/jessie-dnsutils:1.3
    command:
      - sleep
      - "infinity"
    imagePullPolicy: IfNotPresent
  restartPolicy: Always
"""


def test_access_an_application_through_a_node_port(tutorial: Tutorial) -> None:
    t = tutorial
    assert "created" in t.kubectl("apply", "-f", "-", stdin=HELLO_APPLICATION)
    until("2 replicas", lambda: "2/2" in t.kubectl("get", "deployments", "hello-world"))
    assert "run=load-balancer-example" in t.kubectl("describe", "deployments", "hello-world")
    out = t.kubectl("expose", "deployment", "hello-world", "--type=NodePort",
                    "--name=example-service")  # fmt: skip
    assert "service/example-service exposed" in out, out
    described = t.kubectl("describe", "services", "example-service")
    port = int(described.split("NodePort:")[1].split()[1].split("/")[0])
    pods = t.kubectl("get", "pods", "--selector=run=load-balancer-example", "--output=wide")
    assert pods.count("Running") == 2, pods

    def answer() -> str | None:
        body = http_get(f"http://{t.node_ip}:{port}")
        return body if "hostname: hello-world-" in body else None

    assert "GET / HTTP/1.1" in until("the node port answers", answer)
    t.kubectl("delete", "services", "example-service")
    t.kubectl("delete", "deployment", "hello-world")


def test_connecting_applications_with_services(tutorial: Tutorial) -> None:
    t = tutorial
    assert "created" in t.kubectl("apply", "-f", "-", stdin=RUN_MY_NGINX)
    until("2 nginx replicas", lambda: "2/2" in t.kubectl("get", "deployments", "my-nginx"))
    ips = t.kubectl("get", "pods", "-l", "run=my-nginx", "-o",
                    "custom-columns=POD_IP:.status.podIPs")  # fmt: skip
    assert ips.count("ip:") == 2, ips
    assert "service/my-nginx exposed" in t.kubectl("expose", "deployment/my-nginx")
    cluster_ip = t.kubectl("get", "svc", "my-nginx", "-o", "jsonpath={.spec.clusterIP}")
    until(
        "the Service's endpoints",
        lambda: t.kubectl("describe", "svc", "my-nginx").count(":80,") == 1,
    )
    slices = t.kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=my-nginx")
    assert "my-nginx" in slices, slices
    # Pods made before the Service lack its variables; the tutorial recreates them.
    t.kubectl("scale", "deployment", "my-nginx", "--replicas=0")
    until("no nginx pod", lambda: not t.pod_names("run=my-nginx"))
    t.kubectl("scale", "deployment", "my-nginx", "--replicas=2")
    until("2 nginx replicas again", lambda: "2/2" in t.kubectl("get", "deployments", "my-nginx"))
    pod = t.pod_names("run=my-nginx")[0]
    env = t.kubectl("exec", pod, "--", "printenv")
    assert f"MY_NGINX_SERVICE_HOST={cluster_ip}" in env, env
    assert "MY_NGINX_SERVICE_PORT=80" in env, env
    assert "kube-dns" in t.kubectl("get", "services", "kube-dns", "--namespace=kube-system")
    # `kubectl run curl --image=radial/busyboxplus:curl -i --tty --rm`, then `nslookup
    # my-nginx` at its prompt: attaching to a container's stdin is not emulated
    # (docs/tutorials.md), so the pod sleeps and the shell is an exec into it.
    t.kubectl("run", "curl", "--image=radial/busyboxplus:curl", "--", "sleep", "3600")
    until("the curl pod runs", lambda: "Running" in t.kubectl("get", "pods", "curl"))
    out = t.kubectl(
        "exec",
        "-i",
        "curl",
        "--",
        "sh",
        stdin="nslookup my-nginx\ncurl -s my-nginx\nexit\n",
        timeout=60,
    )
    assert "my-nginx.default.svc.cluster.local" in out and cluster_ip in out, out
    assert "Welcome to nginx!" in out, out
    t.kubectl("delete", "pod", "curl", "--wait=false")


def test_debugging_dns_resolution(tutorial: Tutorial) -> None:
    t = tutorial
    assert "pod/dnsutils created" in t.kubectl("apply", "-f", "-", stdin=DNSUTILS)
    until("dnsutils runs", lambda: "Running" in t.kubectl("get", "pods", "dnsutils"))

    def lookup() -> str | None:
        out = t.kubectl("exec", "-i", "-t", "dnsutils", "--", "nslookup", "kubernetes.default",
                        check=False)  # fmt: skip
        return out if "Name:" in out else None

    out = until("nslookup kubernetes.default", lookup)
    kubernetes_ip = t.kubectl("get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}")
    assert "kubernetes.default.svc.cluster.local" in out and kubernetes_ip in out, out
    dns_ip = t.kubectl("get", "svc", "kube-dns", "-n", "kube-system",
                       "-o", "jsonpath={.spec.clusterIP}")  # fmt: skip
    assert f"Server:\t\t{dns_ip}" in out, out
    dug = t.kubectl(
        "exec", "dnsutils", "--", "dig", "+short", "kubernetes.default.svc.cluster.local"
    )
    assert dug.split() == [kubernetes_ip], dug
    missing = t.kubectl("exec", "dnsutils", "--", "nslookup", "nothing-here", check=False)
    assert "NXDOMAIN" in missing, missing
    pods = t.kubectl("get", "pods", "--namespace=kube-system", "-l", "k8s-app=kube-dns")
    assert "coredns-" in pods and "Running" in pods, pods
    assert "listening" in t.kubectl("logs", "--namespace=kube-system", "-l", "k8s-app=kube-dns")
    endpoints = t.kubectl("get", "endpoints", "kube-dns", "--namespace=kube-system")
    assert ":53" in endpoints, endpoints
