//! The settings of the image's NTP client (systemd-timesyncd) that a configuration's `[time]`
//! gives: the operator's servers, reached through the carrier, and no public fallback.
//!
//! `renkei timesync-conf` writes them as a timesyncd drop-in before timesyncd starts (and
//! again when a push replaces the config), so the box's clock follows the data centre's and
//! never a server on the Internet. NTP is the box's own traffic, like IKE or the management
//! API: it is not a proxied application connection.

use crate::config::Config;

/// The drop-in's text for `config`; `None` without `[time]` (the image's defaults apply).
pub fn timesyncd_conf(config: &Config) -> Option<String> {
    let time = config.time.as_ref()?;
    let servers: Vec<String> = time.servers.iter().map(ToString::to_string).collect();
    Some(format!(
        "# Written by `renkei timesync-conf` from renkei.toml [time]; replaced on every change.\n\
         [Time]\n\
         NTP={}\n\
         # No public server: the box's clock comes from the data centre only.\n\
         FallbackNTP=\n\
         PollIntervalMinSec={}\n\
         PollIntervalMaxSec={}\n",
        servers.join(" "),
        time.poll_min_secs,
        time.poll_max_secs,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(time: &str) -> Config {
        let text = format!("{}\n{time}", include_str!("../../config/disclosing.toml"));
        toml::from_str(&text).expect("the example with a [time] section")
    }

    #[test]
    fn time_servers_become_timesyncd_settings_without_a_public_fallback() {
        let config = config_with(
            "[time]\nservers = [\"198.19.0.1\", \"fd00::1\"]\npoll_min_secs = 16\npoll_max_secs = 64\n",
        );
        let text = timesyncd_conf(&config).expect("a drop-in");
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "[Time]",
                "NTP=198.19.0.1 fd00::1",
                "FallbackNTP=",
                "PollIntervalMinSec=16",
                "PollIntervalMaxSec=64",
            ]
        );
    }

    #[test]
    fn without_a_time_section_there_is_no_drop_in() {
        let config: Config =
            toml::from_str(include_str!("../../config/disclosing.toml")).expect("the example");
        assert_eq!(timesyncd_conf(&config), None);
    }
}
