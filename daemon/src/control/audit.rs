//! One record per control-path event (LOG-2): received, refused, applied, apply failed,
//! confirmed, rolled back, and, at start after a crash, not applied. Each goes to the log with structured fields (journald: `EVENT`,
//! `EVENT_CODE`, `VERSION`, `SIGNER`, `PUSHED_BY`, `REASON`) and, with the same facts in its text, to the
//! status page's event ring, so the administrator sees what the journal says.
//!
//! Refusals are what any client can cause, so they pass the ring's rate limit first (per
//! refusal code): a flood of them is summarised, in the log and the ring alike.

use crate::state::events::{Admission, ConfigFacts, ConfigReason, EventLog, Level, Occurrence};

/// What happened to a pushed config (the event ring names it with a code of its own).
pub use crate::state::events::ConfigChange as Kind;

/// One control-path event with what is known about the config and who sent it.
#[derive(Debug, Clone)]
pub struct ConfigEvent<'a> {
    /// What happened.
    pub kind: Kind,
    /// `meta.version` of the config concerned, when known (not for a push refused before its
    /// signature was checked: unsigned text is not parsed).
    pub version: Option<u64>,
    /// Fingerprint of the key that signed it, when known.
    pub signer: Option<&'a str>,
    /// The operator identity of the request, when known (the client certificate's name for a
    /// refused client).
    pub pushed_by: Option<&'a str>,
    /// Why (the refusal code, the rollback's cause), when there is one.
    pub reason: Option<ConfigReason>,
    /// The version the box runs (and keeps) when a push is refused, and after start-up
    /// recovery.
    pub running_version: Option<u64>,
    /// Everything else, for people.
    pub detail: String,
}

impl<'a> ConfigEvent<'a> {
    /// An event with nothing known yet.
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        ConfigEvent {
            kind,
            version: None,
            signer: None,
            pushed_by: None,
            reason: None,
            running_version: None,
            detail: detail.into(),
        }
    }

    /// Sets the version.
    pub fn version(mut self, version: impl Into<Option<u64>>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the signer.
    pub fn signer(mut self, signer: Option<&'a str>) -> Self {
        self.signer = signer;
        self
    }

    /// Sets the operator identity.
    pub fn pushed_by(mut self, pushed_by: Option<&'a str>) -> Self {
        self.pushed_by = pushed_by;
        self
    }

    /// Sets the reason code.
    pub fn reason(mut self, reason: ConfigReason) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Sets the version the box runs.
    pub fn running_version(mut self, version: u64) -> Self {
        self.running_version = Some(version);
        self
    }

    /// The event ring's typed event: the same facts as the log record.
    pub fn occurrence(&self) -> Occurrence {
        Occurrence::Config {
            change: self.kind,
            facts: ConfigFacts {
                version: self.version,
                signer: self.signer.map(str::to_string),
                pushed_by: self.pushed_by.map(str::to_string),
                reason: self.reason,
                running_version: self.running_version,
                detail: self.detail.clone(),
            },
        }
    }

    /// The event ring's text: the same facts as the log record, in one line.
    pub fn message(&self) -> String {
        self.occurrence().message()
    }

    /// The ring's rate-limit key: refusals only, per refusal code.
    fn limited_key(&self) -> Option<String> {
        (self.kind == Kind::Refused).then(|| {
            format!(
                "refused:{}",
                self.reason.map_or("other", ConfigReason::as_str)
            )
        })
    }

    /// Logs the event and keeps it in the ring (when there is one); a refusal over the ring's
    /// rate limit is only counted, for the summary the ring writes later.
    pub fn emit(&self, events: Option<&EventLog>) {
        let limited_key = self.limited_key();
        if let (Some(events), Some(key)) = (events, &limited_key) {
            if events.admit("config", key) == Admission::Suppress {
                return;
            }
        }
        let (event, event_code, version, signer, pushed_by, reason, running_version, detail) = (
            self.kind.word(),
            self.kind.code().as_str(),
            self.version,
            self.signer,
            self.pushed_by,
            self.reason.map(ConfigReason::as_str),
            self.running_version,
            self.detail.as_str(),
        );
        match self.kind.level() {
            Level::Info => {
                tracing::info!(
                    event,
                    event_code,
                    version,
                    signer,
                    pushed_by,
                    reason,
                    running_version,
                    detail,
                    "{}",
                    self.kind.title()
                )
            }
            Level::Warning => {
                tracing::warn!(
                    event,
                    event_code,
                    version,
                    signer,
                    pushed_by,
                    reason,
                    running_version,
                    detail,
                    "{}",
                    self.kind.title()
                )
            }
            Level::Error => {
                tracing::error!(
                    event,
                    event_code,
                    version,
                    signer,
                    pushed_by,
                    reason,
                    running_version,
                    detail,
                    "{}",
                    self.kind.title()
                )
            }
        }
        match (events, limited_key) {
            (Some(events), Some(key)) => events.record_limited(&key, self.occurrence()),
            (Some(events), None) => events.record(self.occurrence()),
            (None, _) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_the_ring_text_names_version_signer_and_pusher() {
        let events = EventLog::new();
        ConfigEvent::new(Kind::Refused, "version 4 is not greater than 5")
            .version(4)
            .signer(Some("0011223344556677"))
            .pushed_by(Some("operator.renkei.test"))
            .reason(ConfigReason::NotNewer)
            .emit(Some(&events));
        ConfigEvent::new(Kind::Refused, "").emit(Some(&events));
        let kept = events.snapshot();
        assert_eq!(kept.len(), 2);
        assert_eq!(
            kept[0].message,
            "config refused (not_newer): version 4, signed by 0011223344556677, pushed by operator.renkei.test: version 4 is not greater than 5"
        );
        assert_eq!(kept[0].kind, "config");
        assert_eq!(kept[0].level, Level::Warning);
        assert_eq!(
            kept[1].message,
            "config refused: version unknown, signed by unknown, pushed by unknown"
        );
    }

    #[test]
    fn int1_log2_refusals_are_rate_limited_and_applies_are_not() {
        let events = EventLog::new();
        for _ in 0..1000 {
            ConfigEvent::new(Kind::Refused, "")
                .pushed_by(Some("clinic.renkei.test"))
                .reason(ConfigReason::NotOperator)
                .emit(Some(&events));
        }
        for v in 2..40 {
            ConfigEvent::new(Kind::Applied, "")
                .version(v)
                .emit(Some(&events));
        }
        let kept = events.snapshot();
        let refused = kept
            .iter()
            .filter(|e| e.message.contains("not_operator"))
            .count();
        assert_eq!(
            refused,
            crate::state::events::EVENT_BURST_PER_KEY as usize,
            "{kept:#?}"
        );
        assert_eq!(
            kept.iter()
                .filter(|e| e.message.starts_with("config applied"))
                .count(),
            38
        );
    }
}
