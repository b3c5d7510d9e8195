#!/usr/bin/env python3
"""The official Python `kubernetes` client against Skiff: create/list/watch/patch/delete on pods and deployments.

Usage: python_client.py KUBECONFIG. Exits non-zero on the first failed check.
"""
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()
NS = "pyclient"
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))

# Watch from now, in a thread, while we create.
seen = []
ready = threading.Event()


def watcher():
    w = watch.Watch()
    ready.set()
    for ev in w.stream(core.list_namespaced_pod, namespace=NS, timeout_seconds=10):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()


t = threading.Thread(target=watcher)
t.start()
ready.wait()

pod = client.V1Pod(
    metadata=client.V1ObjectMeta(name="p1", labels={"app": "py"}),
    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1.36", command=["sleep", "3600"])]),
)
created = core.create_namespaced_pod(NS, pod)
check(created.metadata.uid and created.metadata.resource_version, "created pod has uid and resourceVersion")
check(created.spec.restart_policy == "Always", "pod defaults applied")
check(created.status.phase == "Pending", "new pod is Pending")

pods = core.list_namespaced_pod(NS, label_selector="app=py")
check([p.metadata.name for p in pods.items] == ["p1"], "list by label selector")
check(core.list_namespaced_pod(NS, label_selector="app=other").items == [], "non-matching selector lists nothing")

patched = core.patch_namespaced_pod("p1", NS, {"metadata": {"labels": {"tier": "front"}}})
check(patched.metadata.labels == {"app": "py", "tier": "front"}, "strategic-merge patch of labels")
check(int(patched.metadata.resource_version) > int(created.metadata.resource_version), "resourceVersion grows")

try:
    core.create_namespaced_pod(NS, pod)
    check(False, "duplicate create must fail")
except ApiException as e:
    check(e.status == 409, "duplicate create is 409")

bad = client.V1Pod(metadata=client.V1ObjectMeta(name="bad"), spec=client.V1PodSpec(containers=[client.V1Container(name="c")]))
try:
    core.create_namespaced_pod(NS, bad)
    check(False, "pod without image must fail")
except ApiException as e:
    check(e.status == 422 and "spec.containers[0].image: Required value" in e.body, "422 with field cause")

core.delete_namespaced_pod("p1", NS)
t.join(15)
types = [ty for ty, name in seen if name == "p1"]
check(types[:1] == ["ADDED"] and "MODIFIED" in types and types[-1] == "DELETED", f"watch saw ADDED, MODIFIED, DELETED: {seen}")

dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1DeploymentSpec(
        replicas=2,
        selector=client.V1LabelSelector(match_labels={"app": "web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.25")]),
        ),
    ),
)
d = apps.create_namespaced_deployment(NS, dep)
check(d.metadata.generation == 1 and d.spec.strategy.type == "RollingUpdate", "deployment defaults and generation")
d = apps.patch_namespaced_deployment("web", NS, {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.26"}]}}}})
check(d.spec.template.spec.containers[0].image == "nginx:1.26" and d.metadata.generation == 2, "patch container image by merge key")
s = apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 4}})
check(s.spec.replicas == 4, "scale subresource")
check(len(apps.list_namespaced_deployment(NS).items) == 1, "list deployments")
apps.delete_namespaced_deployment("web", NS)
try:
    apps.read_namespaced_deployment("web", NS)
    check(False, "deleted deployment must be gone")
except ApiException as e:
    check(e.status == 404, "read after delete is 404")

core.delete_namespace(NS)
print(f"python client: {checks} passed, 0 failed")
