//! End-to-end tests of the isolation a config asks for: user namespaces, seccomp, capabilities,
//! rlimits, no_new_privs, masked and read-only paths, devices, hooks, sysctl, hostname and
//! domainname. Gated like tests/runtime.rs; every container is deleted and checked gone.

mod common;

use common::{edit_json, Lab};
use serde_json::json;

/// Runs `script` in a fresh container of `lab` whose spec `edit` changed, and checks that it
/// left nothing behind.
fn run(
    lab: &Lab,
    id: &str,
    script: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> common::Out {
    let bundle = lab.bundle(id, &["sh", "-c", script], |spec| edit_json(spec, edit));
    lab.track(id);
    let out = lab.rt(&["run", "-b", bundle.to_str().unwrap(), id]);
    lab.assert_gone(id);
    out
}

#[test]
fn user_namespace_maps_root_to_an_unprivileged_host_uid() {
    require_privileges!();
    let lab = Lab::new();
    // The mapped root must be able to reach the bundle.
    std::fs::set_permissions(
        lab.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let script = "cat /proc/self/uid_map; id -u; sleep 60";
    let bundle = lab.bundle("userns", &["sh", "-c", script], |spec| {
        edit_json(spec, |v| {
            v["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "user"}));
            let map = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
            v["linux"]["uidMappings"] = map.clone();
            v["linux"]["gidMappings"] = map;
        })
    });
    lab.track("userns");
    let (mut child, out_path, err_path) = lab.spawn(&["run", "-b", bundle.to_str().unwrap(), "userns"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let inside = loop {
        let text = std::fs::read_to_string(&out_path).unwrap();
        if text.lines().count() >= 2 || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let init_pid = lab
        .rt(&["state", "userns"])
        .stdout
        .parse::<serde_json::Value>()
        .ok()
        .and_then(|s| s["pid"].as_i64());
    let init_user_ns = init_pid
        .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok())
        .map(|l| l.display().to_string());
    let host_uid = init_pid
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|st| {
            let line = st.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(1).map(str::to_owned)
        });
    // An exec'd process joins the user namespace too: root inside, the mapped uid outside, and
    // another user maps the same way.
    let exec = lab.rt(&["exec", "userns", "sh", "-c", "id -u; id -g; cat /proc/self/uid_map; readlink /proc/self/ns/user"]);
    let exec_user = lab.rt(&["exec", "--user", "1000:1000", "userns", "id", "-u"]);
    let pid_file = lab.dir.path().join("exec.pid");
    let detached = lab.rt(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "userns",
        "sleep",
        "60",
    ]);
    let exec_host_uid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok())
        .and_then(|st| {
            let line = st.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(1).map(str::to_owned)
        });
    let killed = lab.rt(&["kill", "userns", "KILL"]);
    let status = child.wait().unwrap();
    let words: Vec<&str> = inside.split_whitespace().collect();
    assert_eq!(
        words,
        ["0", "200000", "65536", "0"],
        "container view: {inside:?}"
    );
    assert_eq!(host_uid.as_deref(), Some("200000"), "host view");
    assert_eq!(exec.code, 0, "{exec:?}");
    let exec_words: Vec<&str> = exec.stdout.split_whitespace().collect();
    assert_eq!(exec_words[..5], ["0", "0", "0", "200000", "65536"], "{exec:?}");
    assert_eq!(exec_words.get(5).copied(), init_user_ns.as_deref(), "the init's user namespace");
    assert_eq!((exec_user.code, exec_user.stdout.trim()), (0, "1000"), "{exec_user:?}");
    assert_eq!(detached.code, 0, "{detached:?}");
    assert_eq!(exec_host_uid.as_deref(), Some("200000"), "host view of the exec'd process");
    assert_eq!(killed.code, 0, "{killed:?}");
    assert_eq!(status.code(), Some(137));
    let run_stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(!lab.root.join("userns").exists(), "state dir of userns remains; run said: {run_stderr}");
    lab.assert_gone("userns");
}

#[test]
fn seccomp_profile_makes_denied_calls_fail_with_its_errno() {
    require_privileges!();
    let lab = Lab::new();
    let out = run(
        &lab,
        "seccomp",
        "mkdir /tmp/x || echo denied; touch /tmp/y && echo touched",
        |v| {
            v["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
                // ETXTBSY: an errno mkdir never gives on its own.
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 26}]
            });
        },
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("Text file busy"), "{out:?}");
    assert_eq!(out.stdout, "denied\ntouched\n", "{out:?}");
}

#[test]
fn capabilities_are_exactly_the_configured_ones() {
    require_privileges!();
    let lab = Lab::new();
    let caps = |names: &[&str]| {
        let names = json!(names);
        json!({"bounding": names, "effective": names, "permitted": names})
    };
    let script = "grep CapEff /proc/self/status; touch /tmp/f; chown 1:1 /tmp/f && echo chowned";
    let out = run(&lab, "caps1", script, |v| {
        v["process"]["capabilities"] = caps(&["CAP_CHOWN", "CAP_KILL"]);
    });
    assert_eq!(out.code, 0, "{out:?}");
    // CAP_CHOWN is bit 0, CAP_KILL bit 5.
    assert_eq!(
        out.stdout, "CapEff:\t0000000000000021\nchowned\n",
        "{out:?}"
    );

    let out = run(&lab, "caps2", script, |v| {
        v["process"]["capabilities"] = caps(&["CAP_KILL"]);
    });
    assert_ne!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "CapEff:\t0000000000000020\n", "{out:?}");
    assert!(out.stderr.contains("Operation not permitted"), "{out:?}");
}

#[test]
fn rlimits_and_no_new_privileges_apply() {
    require_privileges!();
    let lab = Lab::new();
    let out = run(
        &lab,
        "rlim",
        "ulimit -n; ulimit -Hn; grep NoNewPrivs /proc/self/status",
        |v| {
            v["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]);
            v["process"]["noNewPrivileges"] = json!(true);
        },
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "123\n456\nNoNewPrivs:\t1\n", "{out:?}");

    let out = run(&lab, "nnp0", "grep NoNewPrivs /proc/self/status", |v| {
        v["process"]["noNewPrivileges"] = json!(false);
    });
    assert_eq!(out.stdout, "NoNewPrivs:\t0\n", "{out:?}");
}

#[test]
fn masked_and_readonly_paths() {
    require_privileges!();
    let lab = Lab::new();
    let script = "echo kcore=$(cat /proc/kcore | head -c 16 | wc -c); \
                  echo version=$(cat /proc/version | wc -c); \
                  echo acpi=$(ls /proc/acpi | wc -l); \
                  echo cmdline=$(cat /proc/cmdline | wc -c); \
                  echo 1 > /proc/sys/kernel/shm_rmid_forced || echo sys-readonly";
    let out = run(&lab, "mask", script, |v| {
        v["linux"]["maskedPaths"] = json!(["/proc/kcore", "/proc/version", "/proc/acpi"]);
        v["linux"]["readonlyPaths"] = json!(["/proc/sys"]);
    });
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..3], ["kcore=0", "version=0", "acpi=0"], "{out:?}");
    assert_ne!(
        lines[3], "cmdline=0",
        "an unmasked file is readable: {out:?}"
    );
    assert_eq!(lines[4], "sys-readonly", "{out:?}");
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");
}

#[test]
fn devices_are_created_and_the_devices_cgroup_denies_the_others() {
    require_privileges!();
    let lab = Lab::new();
    let script = "ls -l /dev/skiffnull; echo x > /dev/skiffnull && echo wrote-null; \
                  (: < /dev/skiffkmsg) || echo kmsg-denied";
    let out = run(&lab, "dev", script, |v| {
        v["linux"]["devices"] = json!([
            {"type": "c", "path": "/dev/skiffnull", "major": 1, "minor": 3, "fileMode": 438, "uid": 0, "gid": 0},
            {"type": "c", "path": "/dev/skiffkmsg", "major": 1, "minor": 11, "fileMode": 384, "uid": 0, "gid": 0}
        ]);
        v["linux"]["resources"]["devices"] = json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
        ]);
    });
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("crw-rw-rw-"), "{out:?}");
    assert!(out.stdout.contains("1,   3"), "{out:?}");
    assert!(out.stdout.contains("wrote-null\n"), "{out:?}");
    assert!(out.stdout.contains("kmsg-denied\n"), "{out:?}");
    assert!(out.stderr.contains("Operation not permitted"), "{out:?}");
}

#[test]
fn hooks_run_with_the_state_on_stdin() {
    require_privileges!();
    let lab = Lab::new();
    let marks = lab.dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let hook = |name: &str| {
        let file = marks.join(format!("{name}.json"));
        json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", file.display())]})
    };
    let out = run(&lab, "hooks", "echo ran", |v| {
        v["hooks"] = json!({
            "prestart": [hook("prestart")],
            "createRuntime": [hook("createRuntime")],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")],
        });
    });
    assert_eq!((out.code, out.stdout.as_str()), (0, "ran\n"), "{out:?}");
    for (name, status) in [
        ("prestart", "creating"),
        ("createRuntime", "creating"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        let text = std::fs::read_to_string(marks.join(format!("{name}.json")))
            .unwrap_or_else(|e| panic!("{name} hook did not run: {e}"));
        let state: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text:?}"));
        assert_eq!(state["id"], "hooks", "{name}: {state}");
        assert_eq!(state["status"], status, "{name}: {state}");
        assert!(
            state["bundle"].as_str().unwrap().ends_with("/hooks"),
            "{name}: {state}"
        );
    }

    // A failing hook fails the create and leaves nothing behind.
    let out = run(&lab, "badhook", "echo ran", |v| {
        v["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]});
    });
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!out.stdout.contains("ran"), "{out:?}");
}

#[test]
fn sysctls_apply_inside_the_container_only() {
    require_privileges!();
    let lab = Lab::new();
    let read = |p: &str| std::fs::read_to_string(p).unwrap();
    let host_forward = read("/proc/sys/net/ipv4/ip_forward");
    let out = run(
        &lab,
        "sysctl",
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced",
        |v| {
            v["linux"]["sysctl"] = json!({
                "net.ipv4.ip_forward": if host_forward.trim() == "1" { "0" } else { "1" },
                "kernel.shm_rmid_forced": "1",
            });
        },
    );
    assert_eq!(out.code, 0, "{out:?}");
    let expected = if host_forward.trim() == "1" {
        "0\n1\n"
    } else {
        "1\n1\n"
    };
    assert_eq!(out.stdout, expected, "{out:?}");
    assert_eq!(read("/proc/sys/net/ipv4/ip_forward"), host_forward);
}

#[test]
fn hostname_and_domainname_are_set() {
    require_privileges!();
    let lab = Lab::new();
    let out = run(
        &lab,
        "names",
        "hostname; cat /proc/sys/kernel/domainname",
        |v| {
            v["hostname"] = json!("skiff-host");
            v["domainname"] = json!("skiff.example");
        },
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "skiff-host\nskiff.example\n"),
        "{out:?}"
    );
}
