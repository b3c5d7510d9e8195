//! `ps`: the processes in the container's cgroups — JSON pids, or ps(1) lines like runc.

use std::collections::HashSet;
use std::process::Command;

use libcgroups::common::CgroupManager;

use crate::cli::{GlobalOpts, OutputFormat, PsArgs};
use crate::container;
use crate::error::{Error, Result};

pub fn ps(global: &GlobalOpts, args: &PsArgs) -> Result<i32> {
    let c = container::load(&global.root, &args.id)?;
    let pids: Vec<i32> = crate::cgroups::manager(&c)?
        .get_all_pids()
        .map_err(|e| Error::Cgroup {
            op: "list processes",
            id: args.id.clone(),
            source: Box::new(e),
        })?
        .into_iter()
        .map(|p| p.as_raw())
        .collect();
    match args.format {
        OutputFormat::Json => super::print_json(&pids)?,
        OutputFormat::Table => {
            let ps_args: Vec<&str> = if args.ps_args.is_empty() {
                vec!["-ef"]
            } else {
                args.ps_args.iter().map(String::as_str).collect()
            };
            let out = Command::new("ps")
                .args(&ps_args)
                .output()
                .map_err(|e| Error::io("run ps", e))?;
            if !out.status.success() {
                return Err(Error::InvalidArgument(format!(
                    "ps {}: {}",
                    ps_args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            print!(
                "{}",
                filter_ps(&String::from_utf8_lossy(&out.stdout), &pids)?
            );
        }
    }
    Ok(0)
}

/// Keeps the header and the lines whose PID column is one of `pids`.
fn filter_ps(output: &str, pids: &[i32]) -> Result<String> {
    let mut lines = output.lines();
    let header = lines.next().unwrap_or_default();
    let column = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| Error::InvalidArgument("ps output has no PID column".into()))?;
    let wanted: HashSet<i32> = pids.iter().copied().collect();
    let mut out = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(column)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| wanted.contains(&p)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_header_and_container_pids() {
        let out = "UID PID PPID CMD\nroot 1 0 init\nroot 42 1 sh\nroot 43 42 sleep\n";
        assert_eq!(
            filter_ps(out, &[42, 43]).unwrap(),
            "UID PID PPID CMD\nroot 42 1 sh\nroot 43 42 sleep\n"
        );
        assert!(filter_ps("UID CMD\n", &[1]).is_err());
    }
}
