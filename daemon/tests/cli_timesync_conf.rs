//! `renkei timesync-conf` with the real binary, as the image's `renkei-timesync-conf.service`
//! runs it: a config's `[time]` becomes systemd-timesyncd's runtime drop-in (its servers, no
//! public fallback), a config without `[time]` removes it, and an invalid config leaves the
//! drop-in in place (INT-2: the box's clock comes from the data centre).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Fixture, EXAMPLES};

fn disclosing_text() -> &'static str {
    EXAMPLES
        .iter()
        .find(|(name, _)| *name == "disclosing.toml")
        .map(|(_, text)| *text)
        .expect("the disclosing example")
}

fn timesync_conf(fixture: &Fixture, config: &Path, output: &Path) -> Output {
    let output = output.display().to_string();
    fixture.renkei(&["timesync-conf", "--output", &output, "--config"], config)
}

fn drop_in(fixture: &Fixture) -> PathBuf {
    // A folder that does not exist yet: the command makes it.
    fixture.path().join("run/timesyncd.conf.d/50-renkei.conf")
}

#[test]
fn int2_a_time_section_becomes_timesyncds_servers_and_its_removal_removes_them() {
    let fixture = Fixture::new();
    let with_time = fixture.write_config(
        "with-time.toml",
        &format!(
            "{}\n[time]\nservers = [\"198.19.0.1\", \"198.19.0.2\"]\npoll_max_secs = 1024\n",
            disclosing_text()
        ),
    );
    let output = drop_in(&fixture);
    let run = timesync_conf(&fixture, &with_time, &output);
    assert!(run.status.success(), "{run:?}");
    let text = std::fs::read_to_string(&output).expect("the drop-in");
    let settings: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        settings,
        [
            "[Time]",
            "NTP=198.19.0.1 198.19.0.2",
            "FallbackNTP=",
            "PollIntervalMinSec=32",
            "PollIntervalMaxSec=1024",
        ]
    );

    // An invalid config (here a name, not an address) is refused naming the field; the
    // drop-in stays as it was.
    let invalid = fixture.write_config(
        "invalid.toml",
        &format!(
            "{}\n[time]\nservers = [\"ntp.example\"]\n",
            disclosing_text()
        ),
    );
    let refused = timesync_conf(&fixture, &invalid, &output);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("time.servers[0]"), "{said}");
    assert_eq!(std::fs::read_to_string(&output).expect("kept"), text);

    // Without [time] the image's defaults apply again: the drop-in goes (and going twice is
    // no error).
    let without = fixture.write_config("without.toml", disclosing_text());
    for _ in 0..2 {
        let removed = timesync_conf(&fixture, &without, &output);
        assert!(removed.status.success(), "{removed:?}");
        assert!(!output.exists());
    }
}
