//! End-to-end tests of the `skiff-runtime` binary with real containers. They need root with
//! CAP_SYS_ADMIN, namespaces and busybox-static, and skip with a printed reason otherwise;
//! the bad-input tests at the end run everywhere.

mod common;

use common::{Lab, NetNs};
use libcontainer::oci_spec::runtime::{
    LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
};

#[test]
fn lifecycle_create_start_kill_delete() {
    require_privileges!();
    let lab = Lab::new();
    let bundle = lab.bundle("life", &["sleep", "60"], |_| {});
    lab.track("life");
    let out = lab.rt(&["create", "--bundle", bundle.to_str().unwrap(), "life"]);
    assert_eq!(out.code, 0, "{out:?}");

    let state = lab.state("life");
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], "life");
    assert!(state["pid"].as_i64().unwrap() > 0);
    assert_eq!(state["bundle"], bundle.to_str().unwrap());

    let list = lab.rt(&["list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list[0]["id"], "life");

    assert_eq!(lab.rt(&["start", "life"]).code, 0);
    lab.wait_status("life", "running");
    let again = lab.rt(&["start", "life"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("it is running"), "{again:?}");

    let refused = lab.rt(&["delete", "life"]);
    assert_eq!(refused.code, 1, "delete of a running container must fail");

    assert_eq!(lab.rt(&["kill", "life", "KILL"]).code, 0);
    let state = lab.wait_status("life", "stopped");
    assert_eq!(state["pid"], 0);

    assert_eq!(lab.rt(&["delete", "life"]).code, 0);
    lab.assert_gone("life");
    let gone = lab.rt(&["state", "life"]);
    assert_eq!(gone.code, 1);
    assert!(
        gone.stderr.contains("container \"life\" does not exist"),
        "{gone:?}"
    );
}

#[test]
fn kill_accepts_names_and_numbers_and_keeps_created_state_for_harmless_signals() {
    require_privileges!();
    let lab = Lab::new();
    let bundle = lab.bundle("sig", &["sleep", "60"], |_| {});
    lab.track("sig");
    assert_eq!(
        lab.rt(&["create", "-b", bundle.to_str().unwrap(), "sig"])
            .code,
        0
    );
    // SIGCONT does nothing to a waiting init: the container stays created.
    assert_eq!(lab.rt(&["kill", "sig", "CONT"]).code, 0);
    assert_eq!(lab.state("sig")["status"], "created");
    assert_eq!(lab.rt(&["start", "sig"]).code, 0);
    let bad = lab.rt(&["kill", "sig", "SIGNOPE"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("invalid signal \"SIGNOPE\""), "{bad:?}");
    assert_eq!(lab.rt(&["kill", "sig", "9"]).code, 0);
    lab.wait_status("sig", "stopped");
    assert_eq!(lab.rt(&["delete", "sig"]).code, 0);
    lab.assert_gone("sig");
}

#[test]
fn run_propagates_exit_code_and_output() {
    require_privileges!();
    let lab = Lab::new();
    let bundle = lab.bundle("exit3", &["sh", "-c", "echo out; exit 3"], |_| {});
    lab.track("exit3");
    let out = lab.rt(&["run", "-b", bundle.to_str().unwrap(), "exit3"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.stdout, "out\n");
    lab.assert_gone("exit3");
}

#[test]
fn run_forwards_signals_to_the_container() {
    require_privileges!();
    let lab = Lab::new();
    // An init ignores signals it has no handler for, so the container traps TERM.
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 1; done";
    let bundle = lab.bundle("fwd", &["sh", "-c", script], |_| {});
    lab.track("fwd");
    let (mut child, out_path, _) = lab.spawn(&["run", "-b", bundle.to_str().unwrap(), "fwd"]);
    // Kill the runtime we started if an assertion below fails.
    struct Reap<'a>(&'a mut std::process::Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            if self.0.try_wait().ok().flatten().is_none() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let guard = Reap(&mut child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&out_path)
        .unwrap()
        .contains("ready")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "container never became ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(guard.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = guard.0.wait().unwrap();
    assert_eq!(status.code(), Some(7));
    assert!(std::fs::read_to_string(&out_path)
        .unwrap()
        .contains("got-term"));
    drop(guard);
    lab.assert_gone("fwd");
}

#[test]
fn console_socket_receives_the_terminal() {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, RawFd};

    require_privileges!();
    let lab = Lab::new();
    let sock_path = lab.dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    // Receives the pty master as runc's console-socket protocol sends it (SCM_RIGHTS) and reads
    // everything the container writes to its terminal.
    let reader = std::thread::spawn(move || -> Option<String> {
        let (stream, _) = listener.accept().ok()?;
        let mut name = [0u8; 64];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut name)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .ok()?;
        let master = msg.cmsgs().ok()?.find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })?;
        let mut out = Vec::new();
        let mut chunk = [0u8; 256];
        // EIO once the container side of the terminal is closed.
        while let Ok(n @ 1..) = nix::unistd::read(master, &mut chunk) {
            out.extend_from_slice(&chunk[..n]);
        }
        let _ = nix::unistd::close(master);
        Some(String::from_utf8_lossy(&out).into_owned())
    });
    let bundle = lab.bundle("tty", &["sh", "-c", "tty; echo tty-ok"], |spec| {
        let mut process = spec.process().clone().unwrap();
        process.set_terminal(Some(true));
        spec.set_process(Some(process));
    });
    lab.track("tty");
    let out = lab.rt(&[
        "run",
        "--console-socket",
        sock_path.to_str().unwrap(),
        "-b",
        bundle.to_str().unwrap(),
        "tty",
    ]);
    if out.code != 0 {
        // Unblock the reader if the runtime never connected.
        let _ = std::os::unix::net::UnixStream::connect(&sock_path);
    }
    let text = reader.join().unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    let text = text.expect("no terminal received");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("tty-ok"), "{text:?}");
    lab.assert_gone("tty");

    // Without a console socket a terminal cannot be set up: a clear error, nothing left behind.
    let out = lab.rt(&["create", "-b", bundle.to_str().unwrap(), "tty2"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("--console-socket is required"),
        "{out:?}"
    );
    lab.assert_gone("tty2");
}

fn with_terminal(spec: &mut libcontainer::oci_spec::runtime::Spec) {
    let mut process = spec.process().clone().unwrap();
    process.set_terminal(Some(true));
    spec.set_process(Some(process));
}

#[test]
fn run_without_console_socket_relays_a_foreground_terminal() {
    require_privileges!();
    let lab = Lab::new();
    let script = "tty; stty size; exit 4";
    let bundle = lab.bundle("fg", &["sh", "-c", script], with_terminal);
    lab.track("fg");
    let Some(out) = lab.rt_on_terminal(&["run", "-b", bundle.to_str().unwrap(), "fg"], b"") else {
        eprintln!("skipping: util-linux script is not installed");
        return;
    };
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains("/dev/pts/"), "{out:?}");
    assert!(
        out.stdout.contains("33 101"),
        "window size not passed on: {out:?}"
    );
    lab.assert_gone("fg");

    // Input typed on our terminal reaches the container's shell; the quotes show that the
    // output is the shell's, not the terminal's echo.
    let bundle = lab.bundle("fgsh", &["sh"], with_terminal);
    lab.track("fgsh");
    let out = lab
        .rt_on_terminal(
            &["run", "-b", bundle.to_str().unwrap(), "fgsh"],
            b"echo hel''lo-from-input; exit 9\n",
        )
        .unwrap();
    assert_eq!(out.code, 9, "{out:?}");
    assert!(out.stdout.contains("hello-from-input"), "{out:?}");
    lab.assert_gone("fgsh");
}

#[test]
fn exec_tty_without_console_socket_relays_a_foreground_terminal() {
    require_privileges!();
    let lab = Lab::new();
    let bundle = lab.bundle("fgx", &["sleep", "60"], |_| {});
    lab.track("fgx");
    assert_eq!(
        lab.rt(&["run", "-d", "-b", bundle.to_str().unwrap(), "fgx"])
            .code,
        0
    );
    let Some(out) = lab.rt_on_terminal(
        &[
            "exec",
            "-t",
            "fgx",
            "sh",
            "-c",
            "tty; stty size; kill -TERM $$",
        ],
        b"",
    ) else {
        eprintln!("skipping: util-linux script is not installed");
        return;
    };
    assert_eq!(out.code, 128 + 15, "{out:?}");
    assert!(out.stdout.contains("/dev/pts/"), "{out:?}");
    assert!(out.stdout.contains("33 101"), "{out:?}");
    // The exec'd process was reaped: only the init is left.
    let ps = lab.rt(&["ps", "--format", "json", "fgx"]);
    let pids: Vec<i32> = serde_json::from_str(&ps.stdout).unwrap();
    assert_eq!(pids.len(), 1, "{pids:?}");

    let refused = lab.rt(&["exec", "-t", "-d", "fgx", "true"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("needs --console-socket"),
        "{refused:?}"
    );
    assert_eq!(lab.rt(&["delete", "--force", "fgx"]).code, 0);
    lab.assert_gone("fgx");
}

#[test]
fn json_log_records_the_error_like_runc() {
    let lab = Lab::new();
    let log = lab.dir.path().join("log.json");
    let out = lab.rt(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "ghost",
    ]);
    assert_eq!(out.code, 1);
    let text = std::fs::read_to_string(&log).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert_eq!(last["msg"], "container \"ghost\" does not exist");
    assert!(last["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn exec_into_running_container() {
    require_privileges!();
    let lab = Lab::new();
    let bundle = lab.bundle("ex", &["sleep", "60"], |_| {});
    lab.track("ex");
    assert_eq!(
        lab.rt(&["run", "-d", "-b", bundle.to_str().unwrap(), "ex"])
            .code,
        0
    );
    lab.wait_status("ex", "running");

    let out = lab.rt(&["exec", "ex", "echo", "hi"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "hi\n"), "{out:?}");
    let out = lab.rt(&["exec", "ex", "sh", "-c", "exit 5"]);
    assert_eq!(out.code, 5, "{out:?}");
    let out = lab.rt(&[
        "exec",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        "ex",
        "sh",
        "-c",
        "echo $FOO $(pwd)",
    ]);
    assert_eq!(out.stdout, "bar /tmp\n", "{out:?}");

    let process = lab.dir.path().join("process.json");
    std::fs::write(
        &process,
        r#"{"args":["sh","-c","echo from-process-json"],"cwd":"/","user":{"uid":0,"gid":0},"env":["PATH=/bin"]}"#,
    )
    .unwrap();
    let out = lab.rt(&["exec", "--process", process.to_str().unwrap(), "ex"]);
    assert_eq!(out.stdout, "from-process-json\n", "{out:?}");

    // The exec'd processes are in the container's cgroup while they run.
    let ps = lab.rt(&["ps", "--format", "json", "ex"]);
    let pids: Vec<i32> = serde_json::from_str(&ps.stdout).unwrap();
    assert_eq!(pids.len(), 1, "only the init is left: {pids:?}");

    let none = lab.rt(&["exec", "ex"]);
    assert_eq!(none.code, 1);
    assert!(none.stderr.contains("needs a command"), "{none:?}");

    assert_eq!(lab.rt(&["delete", "--force", "ex"]).code, 0);
    lab.assert_gone("ex");
}

#[test]
fn pause_and_resume() {
    require_privileges!();
    let lab = Lab::new();
    let bundle = lab.bundle("pz", &["sleep", "60"], |_| {});
    lab.track("pz");
    assert_eq!(
        lab.rt(&["run", "-d", "-b", bundle.to_str().unwrap(), "pz"])
            .code,
        0
    );
    lab.wait_status("pz", "running");
    assert_eq!(lab.rt(&["pause", "pz"]).code, 0);
    assert_eq!(lab.state("pz")["status"], "paused");
    let refused = lab.rt(&["exec", "pz", "true"]);
    assert_eq!(refused.code, 1, "exec into a paused container: {refused:?}");
    assert_eq!(lab.rt(&["resume", "pz"]).code, 0);
    assert_eq!(lab.state("pz")["status"], "running");
    let refused = lab.rt(&["resume", "pz"]);
    assert_eq!(refused.code, 1);
    assert_eq!(lab.rt(&["delete", "--force", "pz"]).code, 0);
    lab.assert_gone("pz");
}

#[test]
fn memory_limit_is_enforced_by_oom_kill() {
    require_privileges!();
    let lab = Lab::new();
    let limit = 32 << 20;
    let bundle = lab.bundle(
        "oom",
        &["sh", "-c", "x=aaaa; while true; do x=$x$x; done"],
        |spec| {
            let memory = LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()
                .unwrap();
            common::set_resources(
                spec,
                LinuxResourcesBuilder::default()
                    .memory(memory)
                    .build()
                    .unwrap(),
            );
        },
    );
    lab.track("oom");
    let out = lab.rt(&["run", "-b", bundle.to_str().unwrap(), "oom"]);
    assert_eq!(out.code, 137, "{out:?}");
    lab.assert_gone("oom");
}

#[test]
fn pids_limit_is_enforced() {
    require_privileges!();
    let lab = Lab::new();
    let script = "i=0; while [ $i -lt 10 ]; do sleep 30 & i=$((i+1)); done; echo forked-all";
    let bundle = lab.bundle("pids", &["sh", "-c", script], |spec| {
        let pids = LinuxPidsBuilder::default().limit(4).build().unwrap();
        common::set_resources(
            spec,
            LinuxResourcesBuilder::default().pids(pids).build().unwrap(),
        );
    });
    lab.track("pids");
    let out = lab.rt(&["run", "-b", bundle.to_str().unwrap(), "pids"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("can't fork"), "{out:?}");
    assert!(!out.stdout.contains("forked-all"), "{out:?}");
    lab.assert_gone("pids");
}

#[test]
fn update_changes_limits_of_a_running_container() {
    require_privileges!();
    let lab = Lab::new();
    let bundle = lab.bundle("upd", &["sleep", "60"], |_| {});
    lab.track("upd");
    assert_eq!(
        lab.rt(&["run", "-d", "-b", bundle.to_str().unwrap(), "upd"])
            .code,
        0
    );
    lab.wait_status("upd", "running");
    let out = lab.rt(&["update", "--pids-limit", "7", "--memory", "48m", "upd"]);
    assert_eq!(out.code, 0, "{out:?}");
    let path = lab.cgroups_path("upd");
    let pids_max = std::fs::read_to_string(common::cgroup_file("pids", &path, "pids.max")).unwrap();
    assert_eq!(pids_max.trim(), "7");
    let mem = common::cgroup_file("memory", &path, "memory.limit_in_bytes");
    let mem = if mem.exists() {
        mem
    } else {
        common::cgroup_file("memory", &path, "memory.max")
    };
    assert_eq!(
        std::fs::read_to_string(mem).unwrap().trim(),
        (48u64 << 20).to_string()
    );

    let resources = lab.dir.path().join("resources.json");
    std::fs::write(&resources, r#"{"pids":{"limit":9}}"#).unwrap();
    assert_eq!(
        lab.rt(&["update", "-r", resources.to_str().unwrap(), "upd"])
            .code,
        0
    );
    let pids_max = std::fs::read_to_string(common::cgroup_file("pids", &path, "pids.max")).unwrap();
    assert_eq!(pids_max.trim(), "9");
    assert_eq!(lab.rt(&["delete", "--force", "upd"]).code, 0);
    lab.assert_gone("upd");
}

#[test]
fn readonly_rootfs_refuses_writes() {
    require_privileges!();
    let lab = Lab::new();
    let bundle = lab.bundle("ro", &["sh", "-c", "echo x > /written"], |spec| {
        let mut root = spec.root().clone().unwrap();
        root.set_readonly(Some(true));
        spec.set_root(Some(root));
    });
    lab.track("ro");
    let out = lab.rt(&["run", "-b", bundle.to_str().unwrap(), "ro"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");
    assert!(!bundle.join("rootfs/written").exists());
    lab.assert_gone("ro");
}

/// The node agent's layout: an empty bundle rootfs and the image's overlay as the first mount, at `/`. The overlay
/// is mounted inside the container's mount namespace only; writes land in the upper dir; a read-only root applies
/// to the overlay.
#[test]
fn overlay_mounted_at_the_root_inside_the_container() {
    require_privileges!();
    let lab = Lab::new();
    let base = lab.dir.path().to_path_buf();
    let (lower, upper, work) = (base.join("lower"), base.join("upper"), base.join("work"));
    let with_overlay = |readonly: bool| {
        let (lower, upper, work) = (lower.clone(), upper.clone(), work.clone());
        move |spec: &mut libcontainer::oci_spec::runtime::Spec| {
            common::edit_json(spec, |v| {
                let opts = [("lowerdir", &lower), ("upperdir", &upper), ("workdir", &work)]
                    .map(|(k, p)| format!("{k}={}", p.display()));
                v["mounts"].as_array_mut().unwrap().insert(
                    0,
                    serde_json::json!({"destination": "/", "type": "overlay", "source": "overlay", "options": opts}),
                );
                v["root"]["readonly"] = serde_json::json!(readonly);
            });
        }
    };
    let script = "grep ' / ' /proc/mounts > /mounts-seen; echo x > /written; exec sleep 60";
    let bundle = lab.bundle("ovl", &["sh", "-c", script], with_overlay(false));
    // The busybox tree the bundle helper made becomes the overlay's lower layer; the bundle's rootfs stays empty.
    std::fs::rename(bundle.join("rootfs"), &lower).unwrap();
    for d in [bundle.join("rootfs"), upper.clone(), work.clone()] {
        std::fs::create_dir(d).unwrap();
    }
    lab.track("ovl");
    let out = lab.rt(&["run", "--detach", "-b", bundle.to_str().unwrap(), "ovl"]);
    assert_eq!(out.code, 0, "{out:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !upper.join("written").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // While it runs: its / is the overlay, writes land in the upper dir, and the host has no mount of it.
    assert_eq!(std::fs::read_to_string(upper.join("written")).unwrap(), "x\n");
    let seen = std::fs::read_to_string(upper.join("mounts-seen")).unwrap();
    assert!(seen.starts_with("overlay / overlay "), "{seen}");
    assert!(!lower.join("written").exists());
    assert_eq!(std::fs::read_dir(bundle.join("rootfs")).unwrap().count(), 0, "nothing on the host's rootfs dir");
    let rootfs = bundle.join("rootfs").canonicalize().unwrap();
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains(&format!(" {} ", rootfs.display())), "no overlay on the host:\n{host_mounts}");
    let out = lab.rt(&["delete", "--force", "ovl"]);
    assert_eq!(out.code, 0, "{out:?}");
    lab.assert_gone("ovl");

    // Read-only root: the overlay is remounted read-only.
    std::fs::remove_file(upper.join("written")).unwrap();
    let bundle = lab.bundle("ovl-ro", &["sh", "-c", "echo x > /written"], with_overlay(true));
    std::fs::remove_dir_all(bundle.join("rootfs")).unwrap();
    std::fs::create_dir(bundle.join("rootfs")).unwrap();
    lab.track("ovl-ro");
    let out = lab.rt(&["run", "-b", bundle.to_str().unwrap(), "ovl-ro"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");
    assert!(!upper.join("written").exists());
    lab.assert_gone("ovl-ro");
}

#[test]
fn hostname_is_set() {
    require_privileges!();
    let lab = Lab::new();
    let bundle = lab.bundle("host", &["hostname"], |spec| {
        spec.set_hostname(Some("skiff-box".into()));
    });
    lab.track("host");
    let out = lab.rt(&["run", "-b", bundle.to_str().unwrap(), "host"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "skiff-box\n"),
        "{out:?}"
    );
    lab.assert_gone("host");
}

#[test]
fn joins_a_premade_network_namespace() {
    require_privileges!();
    let lab = Lab::new();
    let netns = NetNs::new("join");
    let bundle = lab.bundle("net", &["readlink", "/proc/self/ns/net"], |spec| {
        common::set_network_path(spec, &netns.path());
    });
    lab.track("net");
    let out = lab.rt(&["run", "-b", bundle.to_str().unwrap(), "net"]);
    assert_eq!(out.code, 0, "{out:?}");
    let inode = std::os::linux::fs::MetadataExt::st_ino(&std::fs::metadata(netns.path()).unwrap());
    assert_eq!(out.stdout.trim(), format!("net:[{inode}]"));
    lab.assert_gone("net");
}

#[test]
fn features_prints_oci_features() {
    let lab = Lab::new();
    let out = lab.rt(&["features"]);
    assert_eq!(out.code, 0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ociVersionMin"], "1.0.0");
}

#[test]
fn bad_input_gets_clear_errors() {
    let lab = Lab::new();
    let out = lab.rt(&["create", "-b", "/nonexistent/bundle", "x"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("bundle /nonexistent/bundle: not a directory"),
        "{out:?}"
    );

    let bundle = lab.dir.path().join("broken");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), "{ nope").unwrap();
    let out = lab.rt(&["create", "-b", bundle.to_str().unwrap(), "x"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("invalid runtime config"), "{out:?}");

    for args in [
        &["state", "ghost"][..],
        &["start", "ghost"],
        &["kill", "ghost"],
        &["delete", "ghost"],
    ] {
        let out = lab.rt(args);
        assert_eq!(out.code, 1, "{args:?}");
        assert!(
            out.stderr.contains("container \"ghost\" does not exist"),
            "{args:?}: {out:?}"
        );
    }
    assert_eq!(lab.rt(&["delete", "--force", "ghost"]).code, 0);
    let out = lab.rt(&["state", "../etc"]);
    assert!(out.stderr.contains("invalid container id"), "{out:?}");
    let out = lab.rt(&["list", "--format", "json"]);
    assert_eq!(out.stdout.trim(), "[]");
}

#[test]
fn invalid_configs_are_refused_naming_the_field() {
    let lab = Lab::new();
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 6] = [
        (
            "noargs",
            |v| {
                v["process"].as_object_mut().unwrap().remove("args");
            },
            "process.args: missing",
        ),
        (
            "norootfs",
            |v| v["root"]["path"] = serde_json::json!("no-such-rootfs"),
            "root.path: rootfs",
        ),
        (
            "badns",
            |v| v["linux"]["namespaces"][0]["type"] = serde_json::json!("bogus"),
            "linux.namespaces[0].type: unknown variant `bogus`",
        ),
        (
            "badversion",
            |v| v["ociVersion"] = serde_json::json!("9.x"),
            "ociVersion: \"9.x\" is not a version",
        ),
        (
            "nodest",
            |v| {
                v["mounts"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({"source": "/tmp", "type": "bind"}))
            },
            "missing field `destination`",
        ),
        (
            "reldest",
            |v| v["mounts"][0]["destination"] = serde_json::json!("proc"),
            "mounts[0].destination: \"proc\" is not an absolute path",
        ),
    ];
    for (id, edit, expected) in cases {
        let bundle = lab.bundle(id, &["true"], |spec| common::edit_json(spec, |_| {}));
        let config = bundle.join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(&config, serde_json::to_vec(&v).unwrap()).unwrap();
        for cmd in ["create", "run"] {
            let out = lab.rt(&[cmd, "-b", bundle.to_str().unwrap(), id]);
            assert_eq!(out.code, 1, "{cmd} {id}: {out:?}");
            assert!(out.stderr.contains(expected), "{cmd} {id}: {out:?}");
            assert!(!lab.root.join(id).exists(), "{cmd} {id} left a state dir");
        }
    }
}
