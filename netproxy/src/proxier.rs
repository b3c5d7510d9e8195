//! The sync loop's body: render, plan, apply in one restore, then clean stale UDP conntrack entries.
//! It remembers the last ruleset that the kernel accepted; without one (first sync, after any failure, and on a
//! forced periodic resync) it reconciles everything against `iptables-save`.

use std::time::{Duration, Instant};

use crate::conntrack::{stale_flows, Conntrack};
use crate::iptables::{Iptables, IptablesError};
use crate::model::DesiredState;
use crate::render::{Renderer, Ruleset};
use crate::restore::{plan, KernelState, Mode};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("reading the current tables: {0}")]
    Save(#[source] IptablesError),
    #[error("applying the rules ({chains} chains, {rules} rules): {source}")]
    Restore { chains: usize, rules: usize, source: IptablesError },
}

/// What one sync did.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncReport {
    pub full: bool,
    pub chains_written: usize,
    pub chains_deleted: usize,
    pub rules_written: usize,
    /// Totals of the whole ruleset: (nat rules, nat chains, filter rules, filter chains).
    pub nat_rules: usize,
    pub nat_chains: usize,
    pub filter_rules: usize,
    pub filter_chains: usize,
    pub stale_flows_deleted: usize,
    /// Time in iptables-save and iptables-restore (the rest is rendering and planning).
    pub iptables_duration: Duration,
    pub duration: Duration,
}

pub struct Proxier {
    iptables: Box<dyn Iptables>,
    conntrack: Box<dyn Conntrack>,
    applied: Option<Ruleset>,
    applied_state: Option<DesiredState>,
    renderer: Renderer,
}

impl Proxier {
    pub fn new(iptables: Box<dyn Iptables>, conntrack: Box<dyn Conntrack>) -> Proxier {
        Proxier { iptables, conntrack, applied: None, applied_state: None, renderer: Renderer::default() }
    }

    /// Brings the kernel to `state`. `full` forces a complete rewrite (the periodic resync).
    pub fn sync(&mut self, state: &DesiredState, full: bool) -> Result<SyncReport, SyncError> {
        let start = Instant::now();
        let ruleset = self.renderer.render(state);
        if full {
            self.applied = None;
        }
        let mut in_iptables = Duration::ZERO;
        let kernel;
        let mode = match &self.applied {
            Some(applied) => Mode::Partial(applied),
            None => {
                let t = Instant::now();
                let nat = self.iptables.save("nat").map_err(SyncError::Save)?;
                let filter = self.iptables.save("filter").map_err(SyncError::Save)?;
                in_iptables += t.elapsed();
                kernel = KernelState::parse(&nat, &filter);
                Mode::Full(&kernel)
            }
        };
        let is_full = matches!(mode, Mode::Full(_));
        let p = plan(&ruleset, mode);
        if !p.text.is_empty() {
            let t = Instant::now();
            let result = self.iptables.restore(&p.text);
            in_iptables += t.elapsed();
            if let Err(source) = result {
                // We no longer know what the kernel holds: the next sync rewrites everything.
                self.applied = None;
                return Err(SyncError::Restore { chains: p.chains_written, rules: p.rules_written, source });
            }
        }
        let mut stale = 0;
        if let Some(old) = &self.applied_state {
            for flow in stale_flows(old, state) {
                match self.conntrack.delete_udp(&flow) {
                    Ok(()) => stale += 1,
                    Err(e) => tracing::warn!(error = %e, ?flow, "deleting stale UDP conntrack entries failed"),
                }
            }
        }
        let report = SyncReport {
            full: is_full,
            chains_written: p.chains_written,
            chains_deleted: p.chains_deleted,
            rules_written: p.rules_written,
            nat_rules: ruleset.nat_rule_count(),
            nat_chains: ruleset.nat_chain_count(),
            filter_rules: ruleset.filter.values().map(|r| r.len()).sum(),
            filter_chains: ruleset.filter.len(),
            stale_flows_deleted: stale,
            iptables_duration: in_iptables,
            duration: start.elapsed(),
        };
        self.applied = Some(ruleset);
        self.applied_state = Some(state.clone());
        Ok(report)
    }
}
