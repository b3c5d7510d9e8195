//! `list`: the containers in the state directory, as a table or JSON.

use crate::cli::{GlobalOpts, ListArgs, OutputFormat};
use crate::container::{self, OciState};
use crate::error::Result;

pub fn list(global: &GlobalOpts, args: &ListArgs) -> Result<i32> {
    let states: Vec<OciState> = container::load_all(&global.root)?
        .iter()
        .map(OciState::of)
        .collect();
    if args.quiet {
        for s in &states {
            println!("{}", s.id);
        }
        return Ok(0);
    }
    match args.format {
        OutputFormat::Json => super::print_json(&states)?,
        OutputFormat::Table => print!("{}", table(&states)),
    }
    Ok(0)
}

/// runc's columns, padded to the widest cell.
fn table(states: &[OciState]) -> String {
    let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
    let mut rows = vec![header.to_vec()];
    for s in states {
        rows.push(vec![
            s.id.clone(),
            s.pid.to_string(),
            s.status.clone(),
            s.bundle.display().to_string(),
            s.created.as_str().unwrap_or_default().to_owned(),
            s.owner.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let s = OciState {
            oci_version: "1.0.2".into(),
            id: "web".into(),
            pid: 42,
            status: "running".into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: serde_json::json!("2024-01-01T00:00:00Z"),
            owner: "root".into(),
            annotations: None,
        };
        let t = table(&[s]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID    PID   STATUS"), "{t}");
        assert!(lines[1].starts_with("web   42    running"), "{t}");
    }
}
