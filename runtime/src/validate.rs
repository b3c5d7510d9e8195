//! Checks of a bundle's `config.json` that name the offending field, before libcontainer sees it.
//!
//! Parsing goes through `serde_path_to_error`, so a wrong type or an unknown enum value (say a
//! namespace type) is reported at its path (`linux.namespaces[2].type`). [`check`] then looks for
//! what parses but cannot run: a bad `ociVersion`, no `process.args`, relative paths the spec
//! requires to be absolute, duplicate namespaces. It is pure: it returns every problem found.

use libcontainer::oci_spec::runtime::Spec;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{field}: {source}")]
    Parse {
        field: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid { problems: Vec<Problem> },
}

/// One field that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub why: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.why)
    }
}

fn problem(field: impl Into<String>, why: impl Into<String>) -> Problem {
    Problem {
        field: field.into(),
        why: why.into(),
    }
}

/// Parses and checks a config; the first error names its field.
pub fn parse(text: &[u8]) -> Result<Spec, ConfigError> {
    let de = &mut serde_json::Deserializer::from_slice(text);
    let spec: Spec = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = match e.path().to_string() {
            p if p == "." || p == "?" => "config".to_owned(),
            p => p,
        };
        ConfigError::Parse {
            field,
            source: e.into_inner(),
        }
    })?;
    let problems = check(&spec);
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(ConfigError::Invalid { problems })
    }
}

/// Everything wrong with a parsed config that the runtime spec forbids or that cannot run.
pub fn check(spec: &Spec) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some(why) = oci_version_problem(spec.version()) {
        out.push(problem("ociVersion", why));
    }
    match spec.root() {
        None => out.push(problem("root", "missing")),
        Some(root) if root.path().as_os_str().is_empty() => out.push(problem("root.path", "empty")),
        Some(_) => {}
    }
    match spec.process() {
        None => out.push(problem("process", "missing")),
        Some(p) => {
            if p.args().as_ref().is_none_or(|a| a.is_empty()) {
                out.push(problem("process.args", "missing: the command to run"));
            }
            if !p.cwd().is_absolute() {
                out.push(problem(
                    "process.cwd",
                    format!("{:?} is not an absolute path", p.cwd()),
                ));
            }
        }
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if m.destination().as_os_str().is_empty() {
            out.push(problem(format!("mounts[{i}].destination"), "missing"));
        } else if !m.destination().is_absolute() {
            out.push(problem(
                format!("mounts[{i}].destination"),
                format!("{:?} is not an absolute path", m.destination()),
            ));
        }
    }
    if let Some(namespaces) = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref()) {
        let mut seen = std::collections::HashSet::new();
        for (i, ns) in namespaces.iter().enumerate() {
            if !seen.insert(ns.typ()) {
                out.push(problem(
                    format!("linux.namespaces[{i}].type"),
                    format!("{} is listed twice", ns.typ()),
                ));
            }
        }
    }
    out
}

/// The spec is semver; this runtime implements 1.x.
fn oci_version_problem(version: &str) -> Option<String> {
    if version.is_empty() {
        return Some("missing".into());
    }
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !numeric {
        return Some(format!("{version:?} is not a version like 1.0.2"));
    }
    if parts[0] != "1" {
        return Some(format!("{version:?}: only 1.x is supported"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A valid config as JSON, changed by `edit`, run through [`parse`].
    fn parse_edited(edit: impl FnOnce(&mut serde_json::Value)) -> Result<Spec, ConfigError> {
        let mut v = serde_json::to_value(Spec::default()).unwrap();
        v["process"]["args"] = json!(["sh"]);
        edit(&mut v);
        parse(&serde_json::to_vec(&v).unwrap())
    }

    fn message(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        parse_edited(edit).unwrap_err().to_string()
    }

    #[test]
    fn a_valid_config_passes() {
        assert!(parse_edited(|_| {}).is_ok());
    }

    #[test]
    fn missing_process_args() {
        let m = message(|v| {
            v["process"].as_object_mut().unwrap().remove("args");
        });
        assert_eq!(m, "process.args: missing: the command to run");
        assert_eq!(
            message(|v| v["process"]["args"] = json!([])),
            "process.args: missing: the command to run"
        );
        let m = message(|v| {
            v.as_object_mut().unwrap().remove("process");
        });
        assert_eq!(m, "process: missing");
    }

    #[test]
    fn unknown_namespace_type_names_its_path() {
        let m = message(|v| v["linux"]["namespaces"][1]["type"] = json!("bogus"));
        assert!(
            m.starts_with("linux.namespaces[1].type: unknown variant `bogus`"),
            "{m}"
        );
    }

    #[test]
    fn duplicate_namespace() {
        let m = message(|v| {
            let first = v["linux"]["namespaces"][0].clone();
            v["linux"]["namespaces"].as_array_mut().unwrap().push(first);
        });
        assert!(m.contains("is listed twice"), "{m}");
    }

    #[test]
    fn bad_oci_versions() {
        for (version, why) in [
            ("", "ociVersion: missing"),
            (
                "banana",
                "ociVersion: \"banana\" is not a version like 1.0.2",
            ),
            ("1.0", "ociVersion: \"1.0\" is not a version like 1.0.2"),
            ("2.0.0", "ociVersion: \"2.0.0\": only 1.x is supported"),
        ] {
            assert_eq!(message(|v| v["ociVersion"] = json!(version)), why);
        }
        for good in ["1.0.0", "1.2.1", "1.0.2-dev", "1.1.0+build"] {
            assert!(
                parse_edited(|v| v["ociVersion"] = json!(good)).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn mount_destinations() {
        let m = message(|v| {
            v["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"source": "/tmp", "type": "bind"}));
        });
        assert!(m.starts_with("mounts["), "{m}");
        assert!(m.contains("missing field `destination`"), "{m}");
        let m = message(|v| {
            v["mounts"][0]["destination"] = json!("");
        });
        assert_eq!(m, "mounts[0].destination: missing");
        let m = message(|v| {
            v["mounts"][0]["destination"] = json!("proc");
        });
        assert_eq!(m, "mounts[0].destination: \"proc\" is not an absolute path");
    }

    #[test]
    fn wrong_types_and_broken_json_name_the_place() {
        let m = message(|v| v["process"]["args"] = json!("sh"));
        assert!(m.starts_with("process.args: invalid type"), "{m}");
        let err = parse(b"{ nope").unwrap_err();
        assert!(
            err.to_string().starts_with("config: key must be a string"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let m = message(|v| {
            v["ociVersion"] = json!("x");
            v["process"]["cwd"] = json!("relative");
        });
        assert_eq!(
            m,
            "ociVersion: \"x\" is not a version like 1.0.2; process.cwd: \"relative\" is not an absolute path"
        );
    }
}
