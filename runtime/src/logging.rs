//! Log setup for the runc-style `--log`, `--log-format` and `--debug` flags.
//!
//! With `--log-format json` every line is `{"level":"error","msg":"...","time":"RFC 3339"}`, the
//! shape runc writes and containerd's shim parses to report a failed create.

use std::fmt;
use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::{GlobalOpts, LogFormat};
use crate::error::{Error, Result};

/// Installs the global subscriber. Without `--log` and `--debug` nothing is logged: errors
/// reach the caller on stderr from `main`, and libcontainer's own error logs would repeat them.
pub fn init(global: &GlobalOpts) -> Result<()> {
    let level = if global.debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
    let writer: Box<dyn std::io::Write + Send> = match &global.log {
        Some(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::io(format!("open log file {}", path.display()), e))?,
        ),
        None if global.debug => Box::new(std::io::stderr()),
        None => return Ok(()),
    };
    let writer = Mutex::new(writer);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(writer);
    let result = match global.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.event_format(RuncJson).try_init(),
    };
    // A second init (only possible in tests) keeps the first subscriber.
    if let Err(e) = result {
        tracing::debug!(err = %e, "log subscriber already set");
    }
    Ok(())
}

/// One JSON object per event, as runc's logrus JSON formatter writes them.
struct RuncJson;

#[derive(Default)]
struct Message {
    msg: String,
    fields: Vec<String>,
}

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_owned();
        } else {
            self.fields.push(format!("{}={value:?}", field.name()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.msg = format!("{value:?}");
        } else {
            self.fields.push(format!("{}={value:?}", field.name()));
        }
    }
}

impl<S, N> FormatEvent<S, N> for RuncJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut message = Message::default();
        event.record(&mut message);
        let mut msg = message.msg;
        for f in message.fields {
            if !msg.is_empty() {
                msg.push(' ');
            }
            msg.push_str(&f);
        }
        let line = serde_json::json!({
            "level": event.metadata().level().as_str().to_ascii_lowercase(),
            "msg": msg,
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        });
        writeln!(writer, "{line}")
    }
}
