//! `exec`: run a new process inside a running container (args, or an OCI process.json).

use std::collections::HashMap;
use std::path::PathBuf;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::{LinuxNamespaceType, Spec};
use libcontainer::syscall::syscall::SyscallType;

use crate::bundle::absolute;
use crate::cli::{ExecArgs, GlobalOpts};
use crate::container;
use crate::error::{Error, Result};
use crate::terminal::{self, ConsoleSocket};
use crate::wait;

pub fn exec(global: &GlobalOpts, args: &ExecArgs) -> Result<i32> {
    let invalid = |m: &str| Err(Error::InvalidArgument(m.to_owned()));
    match (&args.process, args.command.is_empty()) {
        (None, true) => return invalid("exec needs a command or --process"),
        (Some(_), false) => return invalid("give either a command or --process, not both"),
        _ => {}
    }
    if args.tty && args.detach && args.console_socket.is_none() {
        return invalid("--tty with --detach needs --console-socket");
    }
    if !args.tty && args.console_socket.is_some() {
        return invalid("--console-socket needs --tty");
    }
    let env = parse_env(&args.env)?;
    let (uid, gid) = parse_user(args.user.as_deref())?;

    let c = container::load(&global.root, &args.id)?;
    if !c.can_exec() {
        return Err(Error::IncorrectState {
            op: "exec in",
            id: args.id.clone(),
            status: container::status_name(c.status()),
        });
    }
    let root = absolute(&global.root)?;
    // With --tty and args, the terminal flag can only travel in a process.json: write one.
    let tty_process = match (&args.process, args.tty) {
        (None, true) => Some(TempFile(write_tty_process(&c, args, &env)?)),
        _ => None,
    };
    let process = match (&tty_process, &args.process) {
        (Some(f), _) => Some(f.0.clone()),
        (None, Some(p)) => Some(absolute(p)?),
        (None, None) => None,
    };
    let command = if process.is_some() {
        Vec::new()
    } else {
        args.command.clone()
    };
    // libcontainer 0.7 hands a terminal out only detached, through a console socket: a
    // foreground terminal uses the runtime's own socket and relay (see crate::terminal).
    let console = match (args.tty, &args.console_socket) {
        (true, None) => {
            terminal::become_subreaper()?;
            Some(ConsoleSocket::new()?)
        }
        _ => None,
    };
    let console_socket = match (&args.console_socket, &console) {
        (Some(p), _) => Some(absolute(p)?),
        (None, Some(own)) => Some(own.path().to_owned()),
        (None, None) => None,
    };
    let lib = |e| Error::container("exec in", &args.id, e);
    // Last: after this, host-only privileges are gone for this process.
    join_user_namespace(&c)?;
    let pid = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&root)
        .map_err(lib)?
        .with_pid_file(args.pid_file.as_deref().map(absolute).transpose()?)
        .map_err(lib)?
        .with_console_socket(console_socket)
        .validate_id()
        .map_err(lib)?
        .as_tenant()
        .with_detach(args.detach || args.tty)
        .with_cwd(args.cwd.as_ref())
        .with_env(env)
        .with_process(process.as_ref())
        .with_container_args(command)
        .with_user(uid)
        .with_group(gid)
        .build()
        .map_err(lib)?;
    drop(tty_process);
    if args.detach {
        return Ok(0);
    }
    // The exec'd process is our child; wait for it by pid (libcontainer has no wait API).
    match console {
        Some(console) => terminal::relay(pid, console.receive_master()?),
        None => wait::wait_forwarding(pid),
    }
}

/// libcontainer 0.7's tenant builder joins every namespace of the init except the user one (its
/// list stops at ipc, uts, net, pid, mnt, cgroup, time), and nothing in its process chain can be
/// told to. For a container with a user namespace this process joins it itself, right before the
/// builder forks: the intermediate and init processes inherit it and then join the others, the
/// order runc's nsexec uses (user namespace first). Joining keeps our kuid (host root), so the
/// root-owned state directory, cgroup files and pid file stay writable as their owner; our
/// capabilities become those in the container's user namespace, which is what joining its other
/// namespaces and switching to a user mapped there need. Must run single-threaded (setns(2)).
fn join_user_namespace(c: &Container) -> Result<()> {
    let config = c.bundle().join("config.json");
    let spec = Spec::load(&config).map_err(|source| Error::InvalidConfig {
        path: config.clone(),
        source: Box::new(source),
    })?;
    if !has_user_namespace(&spec) {
        return Ok(());
    }
    let gone = || Error::IncorrectState {
        op: "exec in",
        id: c.id().to_owned(),
        status: "stopped".to_owned(),
    };
    let pid = c.pid().ok_or_else(gone)?;
    // Looked up by pid, as the tenant builder looks up the init's other namespaces.
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/user")).map_err(|_| gone())?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWUSER).map_err(|errno| {
        Error::Unsupported(format!(
            "exec into container {:?}: cannot join its user namespace: {errno}",
            c.id()
        ))
    })
}

fn has_user_namespace(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::User))
}

/// `NAME=value` pairs; a later pair wins.
fn parse_env(pairs: &[String]) -> Result<HashMap<String, String>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(Error::InvalidArgument(format!(
                "environment variable {p:?} is not NAME=value"
            ))),
        })
        .collect()
}

/// `uid` or `uid:gid`, numeric as in runc.
fn parse_user(user: Option<&str>) -> Result<(Option<u32>, Option<u32>)> {
    let Some(user) = user else {
        return Ok((None, None));
    };
    let bad = || Error::InvalidArgument(format!("user {user:?} is not uid[:gid]"));
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = u.parse().map_err(|_| bad())?;
    let gid = g.map(|g| g.parse().map_err(|_| bad())).transpose()?;
    Ok((Some(uid), gid))
}

/// The container's own process with these args, env additions, cwd and a terminal.
fn write_tty_process(
    c: &Container,
    args: &ExecArgs,
    env: &HashMap<String, String>,
) -> Result<PathBuf> {
    let config = c.bundle().join("config.json");
    let spec = Spec::load(&config).map_err(|source| Error::InvalidConfig {
        path: config.clone(),
        source: Box::new(source),
    })?;
    let mut process = spec.process().clone().unwrap_or_default();
    let mut all_env = process.env().clone().unwrap_or_default();
    all_env.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    process.set_env(Some(all_env));
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(true));
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.clone());
    }
    let path = c
        .root
        .join(format!("exec-process-{}.json", std::process::id()));
    let text = serde_json::to_vec(&process).map_err(Error::Json)?;
    std::fs::write(&path, text).map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    Ok(path)
}

/// Removes the generated process.json however exec ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            tracing::warn!(path = %self.0.display(), err = %e, "could not remove temporary file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs() {
        let env = parse_env(&["A=1".into(), "B=x=y".into(), "A=2".into()]).unwrap();
        assert_eq!(env["A"], "2");
        assert_eq!(env["B"], "x=y");
        assert!(parse_env(&["NOEQUALS".into()]).is_err());
        assert!(parse_env(&["=v".into()]).is_err());
    }

    #[test]
    fn user_namespaces_are_detected() {
        let mut spec = Spec::default();
        assert!(!has_user_namespace(&spec));
        let mut linux = spec.linux().clone().unwrap();
        let mut ns = linux.namespaces().clone().unwrap();
        let mut user = libcontainer::oci_spec::runtime::LinuxNamespace::default();
        user.set_typ(LinuxNamespaceType::User);
        ns.push(user);
        linux.set_namespaces(Some(ns));
        spec.set_linux(Some(linux));
        assert!(has_user_namespace(&spec));
    }

    #[test]
    fn users() {
        assert_eq!(parse_user(None).unwrap(), (None, None));
        assert_eq!(parse_user(Some("1000")).unwrap(), (Some(1000), None));
        assert_eq!(parse_user(Some("1:2")).unwrap(), (Some(1), Some(2)));
        assert!(parse_user(Some("root")).is_err());
        assert!(parse_user(Some("1:x")).is_err());
    }
}
