"""Test-support tools shared by the test suites: history recording and checking."""
