"""Delivery tests: images, chart, manifests, GitOps, RBAC. A package, so that its module names
(`delivery.test_chart`, ...) cannot clash with same-named test modules elsewhere in the suite."""
