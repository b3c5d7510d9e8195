//! `create`: set up a container from a bundle; its init waits for `start`.

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;

use crate::bundle::{absolute, Bundle};
use crate::cli::{CreateArgs, GlobalOpts, InitOpts};
use crate::container;
use crate::error::{Error, Result};

pub fn create(global: &GlobalOpts, args: &CreateArgs) -> Result<i32> {
    let bundle = Bundle::load(&args.init.bundle)?;
    create_container(global, &args.id, &args.init, &bundle, None)?;
    Ok(0)
}

/// Creates container `id` from `bundle`; on failure removes whatever was left (state dir,
/// cgroups). `own_console` is the runtime's own console socket for a foreground terminal, used
/// when `opts` has none.
pub(crate) fn create_container(
    global: &GlobalOpts,
    id: &str,
    opts: &InitOpts,
    bundle: &Bundle,
    own_console: Option<&std::path::Path>,
) -> Result<Container> {
    container::check_id(id)?;
    let console_socket = opts.console_socket.as_deref().or(own_console);
    match (bundle.terminal(), console_socket) {
        (true, None) => {
            return Err(Error::InvalidArgument(
                "process.terminal is true: --console-socket is required".into(),
            ))
        }
        (false, Some(_)) => {
            return Err(Error::InvalidArgument(
                "--console-socket needs process.terminal to be true".into(),
            ))
        }
        _ => {}
    }
    let root = absolute(&global.root)?;
    std::fs::create_dir_all(&root)
        .map_err(|e| Error::io(format!("create state directory {}", root.display()), e))?;
    let dir = container::dir(&root, id);
    if dir.exists() {
        return Err(Error::Exists(id.to_owned()));
    }
    let pid_file = opts.pid_file.as_deref().map(absolute).transpose()?;
    let console_socket = console_socket.map(absolute).transpose()?;

    let lib = |e| Error::container("create", id, e);
    let builder = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(&root)
        .map_err(lib)?
        .with_pid_file(pid_file)
        .map_err(lib)?
        .with_console_socket(console_socket)
        .with_preserved_fds(opts.preserve_fds)
        .validate_id()
        .map_err(|source| Error::InvalidId {
            id: id.to_owned(),
            source: Box::new(source),
        })?
        .as_init(&bundle.dir)
        .with_systemd(global.systemd_cgroup)
        // `detached` only decides whether a terminal needs a console socket, checked above.
        .with_detach(true)
        .with_no_pivot(opts.no_pivot);
    builder.build().map_err(|e| {
        let cleanup = cleanup_failed_create(id, &dir, bundle);
        lib(e).with_cleanup(cleanup)
    })
}

/// libcontainer cleans up after failures inside its process setup, but not after those between
/// creating the state directory and forking (console socket, saving config). Remove both.
fn cleanup_failed_create(id: &str, dir: &std::path::Path, bundle: &Bundle) -> Option<Error> {
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            return Some(Error::io(format!("remove {}", dir.display()), e));
        }
    }
    let cgroups_path = bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone());
    let path = libcontainer::utils::get_cgroup_path(&cgroups_path, id);
    crate::cgroups::remove_empty(id, &path).err()
}
