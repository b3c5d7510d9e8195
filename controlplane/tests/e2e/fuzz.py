#!/usr/bin/env python3
"""Fuzz the API server with malformed requests and check that it answers each with a status below 500 (or a
node-agent error on the proxy subresources, which have no agent here), stays up, and that every list still reads
back afterwards (nothing half-written or unreadable was stored).

Usage: fuzz.py KUBECONFIG SEED COUNT. Deterministic for a seed. Mutates valid objects of every served kind (wrong
types, deleted fields, unknown fields, huge numbers and strings), sends them as create, update, merge/strategic/
apply/JSON patches, sends raw garbage (truncated, deeply nested, invalid UTF-8) under every content type, bad query
parameters (selectors, limits, continue tokens, watch timeouts), odd names and subresources, and deletions with bad
options. Only 127.0.0.1 is contacted (the kubeconfig's server must be there)."""
import base64, copy, http.client, json, os, random, ssl, sys, tempfile, time, urllib.parse

import yaml

kc = yaml.safe_load(open(sys.argv[1]))
server = urllib.parse.urlparse(kc['clusters'][0]['cluster']['server'])
assert server.hostname in ('127.0.0.1', 'localhost'), "fuzz only a local server"
HOST, PORT = server.hostname, server.port
user = kc['users'][0]['user']
tmp = tempfile.mkdtemp(prefix='skiff-fuzz-')
for name, data in (('c.crt', user['client-certificate-data']), ('c.key', user['client-key-data']),
                   ('ca.crt', kc['clusters'][0]['cluster']['certificate-authority-data'])):
    with open(os.path.join(tmp, name), 'wb') as f:
        f.write(base64.b64decode(data))
ctx = ssl.create_default_context(cafile=os.path.join(tmp, 'ca.crt'))
ctx.load_cert_chain(os.path.join(tmp, 'c.crt'), os.path.join(tmp, 'c.key'))
ctx.check_hostname = False
for name in os.listdir(tmp):
    os.remove(os.path.join(tmp, name))
os.rmdir(tmp)

seed = int(sys.argv[2])
N = int(sys.argv[3])
rnd = random.Random(seed)
findings = []

def req(method, path, body=None, ctype='application/json', accept='application/json', timeout=10):
    conn = http.client.HTTPSConnection(HOST, PORT, context=ctx, timeout=timeout)
    headers = {'Accept': accept}
    if body is not None:
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode('utf-8', 'surrogatepass')
        headers['Content-Type'] = ctype
    try:
        path = urllib.parse.quote(path, safe="/?&=%:;,()!*+'~")
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read(1 << 20)
        return r.status, data
    except Exception as e:
        return None, repr(e).encode()
    finally:
        conn.close()

BASE = {
 ('/api/v1/namespaces/fz/pods', 'Pod'): {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}, "annotations": {"x": "y"}},
   "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sh"], "args": ["-c", "sleep 1"], "ports": [{"containerPort": 80, "protocol": "TCP"}],
     "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
     "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}, "requests": {"cpu": "50m"}},
     "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 5},
     "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
     "volumes": [{"name": "v", "emptyDir": {}}], "restartPolicy": "Always", "nodeSelector": {"k": "v"},
     "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
     "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]}]}}}}},
 ('/apis/apps/v1/namespaces/fz/deployments', 'Deployment'): {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
   "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}}, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
     "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}},
 ('/api/v1/namespaces/fz/services', 'Service'): {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
   "spec": {"selector": {"app": "d"}, "type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}},
 ('/api/v1/namespaces/fz/configmaps', 'ConfigMap'): {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "b"}, "binaryData": {"b": "AAEC"}},
 ('/api/v1/namespaces/fz/secrets', 'Secret'): {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"}, "type": "Opaque", "data": {"a": "YWJj"}, "stringData": {"x": "y"}},
 ('/apis/batch/v1/namespaces/fz/jobs', 'Job'): {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
   "spec": {"completions": 2, "parallelism": 1, "backoffLimit": 3, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}},
 ('/apis/batch/v1/namespaces/fz/cronjobs', 'CronJob'): {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj"},
   "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}},
 ('/apis/apps/v1/namespaces/fz/statefulsets', 'StatefulSet'): {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "ss"},
   "spec": {"serviceName": "s", "replicas": 1, "selector": {"matchLabels": {"app": "ss"}}, "template": {"metadata": {"labels": {"app": "ss"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
     "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}},
 ('/apis/apps/v1/namespaces/fz/daemonsets', 'DaemonSet'): {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ds"},
   "spec": {"selector": {"matchLabels": {"app": "ds"}}, "template": {"metadata": {"labels": {"app": "ds"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}},
 ('/apis/rbac.authorization.k8s.io/v1/namespaces/fz/roles', 'Role'): {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"},
   "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]},
 ('/apis/rbac.authorization.k8s.io/v1/namespaces/fz/rolebindings', 'RoleBinding'): {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "rb"},
   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]},
 ('/api/v1/namespaces/fz/persistentvolumeclaims', 'PersistentVolumeClaim'): {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "pvc"},
   "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
 ('/apis/policy/v1/namespaces/fz/poddisruptionbudgets', 'PodDisruptionBudget'): {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "pdb"},
   "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "d"}}}},
 ('/api/v1/namespaces/fz/resourcequotas', 'ResourceQuota'): {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "rq"}, "spec": {"hard": {"pods": "100", "requests.cpu": "10"}}},
 ('/api/v1/namespaces/fz/limitranges', 'LimitRange'): {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "lr"},
   "spec": {"limits": [{"type": "Container", "default": {"cpu": "100m"}, "defaultRequest": {"cpu": "50m"}, "max": {"cpu": "2"}}]}},
 ('/api/v1/nodes', 'Node'): {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"k": "v"}},
   "spec": {"podCIDR": "10.244.9.0/24", "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}},
 ('/apis/coordination.k8s.io/v1/namespaces/fz/leases', 'Lease'): {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": {"holderIdentity": "x", "leaseDurationSeconds": 40}},
 ('/api/v1/namespaces/fz/serviceaccounts', 'ServiceAccount'): {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}},
 ('/api/v1/namespaces/fz/endpoints', 'Endpoints'): {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ep"},
   "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]},
 ('/apis/discovery.k8s.io/v1/namespaces/fz/endpointslices', 'EndpointSlice'): {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "es"},
   "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}], "ports": [{"port": 80, "protocol": "TCP"}]},
 ('/api/v1/namespaces/fz/events', 'Event'): {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "ev"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "fz"},
   "reason": "R", "message": "m", "type": "Normal"},
 ('/apis/scheduling.k8s.io/v1/priorityclasses', 'PriorityClass'): {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "pc"}, "value": 1000},
 ('/apis/storage.k8s.io/v1/storageclasses', 'StorageClass'): {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "sc"}, "provisioner": "x"},
}

WEIRD = [None, 0, -1, 2**31, 2**63, -2**63, 2**64 + 5, 1e308, -0.5, 1.5, "", " ", "x" * 5000, "üñí©ødé", "\u0000", "../..", "a/b", "%2F",
         True, False, [], [None], [{}], {}, {"": ""}, {"a": {"b": {"c": [1, [2, [3]]]}}}, "1Gi", "-1", "NaN", "1e400", "0x10", "*", "${x}", "\ud800"]

def paths(o, pre=()):
    yield pre
    if isinstance(o, dict):
        for k, v in o.items():
            yield from paths(v, pre + (k,))
    elif isinstance(o, list):
        for i, v in enumerate(o):
            yield from paths(v, pre + (i,))

def setp(o, p, v):
    if not p:
        return v
    cur = o
    for k in p[:-1]:
        cur = cur[k]
    if v is DELETE:
        del cur[p[-1]]
    else:
        cur[p[-1]] = v
    return o

DELETE = object()

def mutate(obj):
    o = copy.deepcopy(obj)
    for _ in range(rnd.randint(1, 3)):
        ps = [p for p in paths(o)]
        p = rnd.choice(ps)
        choice = rnd.random()
        if choice < 0.15 and p:
            v = DELETE
        elif choice < 0.25:
            # add an unknown field to a dict
            try:
                cur = o
                for k in p:
                    cur = cur[k]
                if isinstance(cur, dict):
                    cur[rnd.choice(["zz", "status", "metadata", "spec", "kind", "apiVersion", "x" * 300])] = copy.deepcopy(rnd.choice(WEIRD))
                    continue
            except Exception:
                pass
            v = copy.deepcopy(rnd.choice(WEIRD))
        else:
            v = copy.deepcopy(rnd.choice(WEIRD))
        try:
            o = setp(o, p, v)
        except Exception:
            pass
    return o

PROXIED = ('/log', '/exec', '/attach', '/portforward', '/proxy')


def check(tag, status, data, method, path, body):
    """A finding: no answer at all, or a 5xx other than a proxy subresource's "no node agent" error."""
    sub = urllib.parse.urlparse(path).path
    agent_error = status is not None and status >= 500 and sub.endswith(PROXIED) and b'node' in data
    if status is None or (status >= 500 and not agent_error):
        shown = body if isinstance(body, str) else json.dumps(body, default=str)
        findings.append((tag, status, method, path))
        print("FINDING", tag, status, method, path, shown[:300], data[:300], flush=True)
        if status is None:
            time.sleep(0.5)
            if req('GET', '/readyz')[0] != 200:
                print("fuzz: the server is down", flush=True)
                sys.exit(2)


req('POST', '/api/v1/namespaces', {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fz"}})
BASE[('/api/v1/persistentvolumes', 'PersistentVolume')] = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv"},
   "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/tmp/x"}, "persistentVolumeReclaimPolicy": "Retain"}}
BASE[('/apis/rbac.authorization.k8s.io/v1/clusterroles', 'ClusterRole')] = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "cr"},
   "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]}, {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}],
   "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}}
BASE[('/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', 'ClusterRoleBinding')] = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "crb"},
   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cr"}, "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "fz"}]}
BASE[('/api/v1/namespaces', 'Namespace')] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fz2", "labels": {"a": "b"}}}
BASE[('/apis/authorization.k8s.io/v1/subjectaccessreviews', 'SubjectAccessReview')] = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {"name": "sar"},
   "spec": {"user": "alice", "groups": ["g"], "resourceAttributes": {"namespace": "fz", "verb": "get", "resource": "pods"}}}
BASE[('/apis/authentication.k8s.io/v1/tokenreviews', 'TokenReview')] = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {"name": "tr"}, "spec": {"token": "abc.def.ghi"}}
BASE[('/apis/certificates.k8s.io/v1/certificatesigningrequests', 'CertificateSigningRequest')] = {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": "csr"},
   "spec": {"request": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K", "signerName": "kubernetes.io/kube-apiserver-client", "usages": ["client auth"], "expirationSeconds": 3600}}
BASE[('/api/v1/namespaces/fz/serviceaccounts/sa/token', 'TokenRequest')] = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": ["x"], "expirationSeconds": 3600}, "metadata": {"name": "sa"}}
BASE[('/apis/apps/v1/namespaces/fz/replicasets', 'ReplicaSet')] = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
   "spec": {"replicas": 1, "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["rs"]}]}, "template": {"metadata": {"labels": {"app": "rs"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
BASE[('/apis/apps/v1/namespaces/fz/controllerrevisions', 'ControllerRevision')] = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "crv"}, "revision": 1, "data": {"a": 1}}
keys = list(BASE.keys())
for i in range(N):
    (coll, kind) = rnd.choice(keys)
    base = BASE[(coll, kind)]
    name = base['metadata']['name']
    item = coll + '/' + name
    r = rnd.random()
    if r < 0.30:
        body = mutate(base)
        st, data = req('POST', coll, body); check('create', st, data, 'POST', coll, body)
    elif r < 0.45:
        body = mutate(base)
        st, data = req('PUT', item, body); check('update', st, data, 'PUT', item, body)
    elif r < 0.55:
        body = mutate(base)
        ct = rnd.choice(['application/merge-patch+json', 'application/strategic-merge-patch+json'])
        st, data = req('PATCH', item, body, ctype=ct); check('patch', st, data, 'PATCH', item, body)
    elif r < 0.62:
        body = mutate(base)
        st, data = req('PATCH', item + '?fieldManager=fz&force=' + rnd.choice(['true', 'false']), body, ctype='application/apply-patch+yaml')
        check('apply', st, data, 'PATCH', item, body)
    elif r < 0.67:
        ops = []
        for _ in range(rnd.randint(1, 3)):
            p = rnd.choice(list(paths(base)))
            ptr = '/' + '/'.join(str(x).replace('~', '~0').replace('/', '~1') for x in p)
            ops.append({"op": rnd.choice(["add", "remove", "replace", "move", "copy", "test", "bogus"]), "path": rnd.choice([ptr, ptr + '/-', '/', '', '/x/y/z']),
                        "value": copy.deepcopy(rnd.choice(WEIRD)), "from": rnd.choice([ptr, '/metadata', '/nope'])})
        if rnd.random() < 0.2:
            ops = copy.deepcopy(rnd.choice(WEIRD))
        st, data = req('PATCH', item, ops, ctype='application/json-patch+json'); check('jsonpatch', st, data, 'PATCH', item, ops)
    elif r < 0.72:
        raw = json.dumps(mutate(base))
        cut = rnd.randint(0, len(raw))
        variants = [raw[:cut], raw[:cut] + '\x00' + raw[cut:], '[' * 5000 + ']' * 5000, '{"a":' * 3000 + '1' + '}' * 3000, '\xff\xfe', 'null', '"s"', '1',
                    '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":' + '[' * 200000]
        body = rnd.choice(variants)
        meth = rnd.choice(['POST', 'PUT', 'PATCH'])
        ct = rnd.choice(['application/json', 'application/yaml', 'application/vnd.kubernetes.protobuf', 'text/plain', 'application/merge-patch+json', 'application/apply-patch+yaml'])
        target = coll if meth == 'POST' else item
        st, data = req(meth, target, body.encode('utf-8', 'surrogateescape') if isinstance(body, str) else body, ctype=ct); check('raw', st, data, meth, target, body[:200])
    elif r < 0.85:
        q = {}
        for k in rnd.sample(['labelSelector', 'fieldSelector', 'limit', 'continue', 'resourceVersion', 'resourceVersionMatch', 'timeoutSeconds', 'watch', 'allowWatchBookmarks', 'sendInitialEvents'], rnd.randint(1, 4)):
            q[k] = rnd.choice(['a=b', 'a in (b,c)', '!a', 'a!=', '=', 'metadata.name=p', 'spec.nodeName=', 'status.phase!=Running', 'x==y,,', '(', 'a notin ()', '-1', '0', '99999999999999999999',
                               'abc', 'true', 'NotOlderThan', 'Exact', '1', 'eyJ2IjoxfQ', '%zz', '\u00e9', 'a=' + 'b' * 70, 'k8s.io/' + 'a' * 300 + '=b'])
        if q.get('watch') in ('true', '1'):
            q['timeoutSeconds'] = '1'
        target = rnd.choice([coll, item, coll.replace('/namespaces/fz', '')]) + '?' + urllib.parse.urlencode(q)
        accept = rnd.choice(['application/json', 'application/json;as=Table;v=v1;g=meta.k8s.io', 'application/vnd.kubernetes.protobuf', 'application/yaml', '*/*', 'text/html',
                             'application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io'])
        st, data = req('GET', target, accept=accept, timeout=5); check('list', st, data, 'GET', target, accept)
    elif r < 0.92:
        weird_names = ['..', '.', 'A', 'a' * 300, '%2F', 'a%00b', '%ff', 'a b', 'ümlaut', '-x', 'x-', '', 'a.b.c', '*']
        nm = rnd.choice(weird_names)
        sub = rnd.choice(['', '/status', '/scale', '/log', '/exec', '/eviction', '/binding', '/proxy', '/ephemeralcontainers', '/resize', '/attach', '/portforward', '/bogus'])
        target = coll + '/' + nm + sub
        meth = rnd.choice(['GET', 'DELETE', 'PUT', 'PATCH', 'POST'])
        body = mutate(base) if meth in ('PUT', 'PATCH', 'POST') else None
        st, data = req(meth, target, body, ctype='application/merge-patch+json' if meth == 'PATCH' else 'application/json'); check('names', st, data, meth, target, body)
    elif r < 0.96:
        sub = rnd.choice(['/status', '/scale', '/log?container=zz&tailLines=-1&sinceSeconds=-5&limitBytes=0', '/eviction', '/binding', '/ephemeralcontainers', '/log?follow=x&previous=q'])
        meth = rnd.choice(['GET', 'PUT', 'PATCH', 'POST'])
        body = mutate(rnd.choice([base, {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": name}, "spec": {"replicas": 3}},
                                  {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}},
                                  {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": "n1"}}]))
        target = item + sub
        st, data = req(meth, target, body if meth != 'GET' else None, ctype='application/merge-patch+json' if meth == 'PATCH' else 'application/json')
        check('sub', st, data, meth, target, body)
    else:
        body = mutate({"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Foreground", "gracePeriodSeconds": 0, "preconditions": {"uid": "x"}, "dryRun": ["All"]})
        target = rnd.choice([item, coll]) + rnd.choice(['', '?dryRun=All', '?gracePeriodSeconds=-1', '?propagationPolicy=Bogus', '?labelSelector=(('])
        st, data = req('DELETE', target, body); check('delete', st, data, 'DELETE', target, body)

# The server is up, and every list reads back (nothing unreadable was stored).
ready = req('GET', '/readyz')[0]
if ready != 200:
    findings.append(('readyz', ready, 'GET', '/readyz'))
for coll, _ in keys:
    if coll.endswith('/token') or 'reviews' in coll:
        continue
    st, data = req('GET', coll)
    if st != 200:
        findings.append(('list', st, 'GET', coll))
        print("FINDING list", st, coll, data[:300], flush=True)
print(f"fuzz: {N} requests, {len(findings)} findings")
sys.exit(1 if findings else 0)
