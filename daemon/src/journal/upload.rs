//! The settings of the image's `systemd-journal-upload` from the config's `[logs]`
//! (`renkei journal-upload-conf`, run by renkei-journal-upload-conf.service before the uploader
//! starts): the URL of the upload service's loopback listener, where renkei takes the plain
//! HTTP and carries it in profile TLS to the operator's `systemd-journal-remote`.

use crate::config::Config;

/// The drop-in's text for `config`; `None` without `[logs]` (the uploader does not run). A
/// config that passed validation names an outbound service on loopback; `None` too if not.
pub fn journal_upload_conf(config: &Config) -> Option<String> {
    let logs = config.logs.as_ref()?;
    let service = config
        .services
        .iter()
        .find(|s| s.name == logs.upload_service)?;
    let listen = service.listen;
    if !listen.ip().is_loopback() {
        return None;
    }
    // SocketAddr's Display writes an IPv6 address in brackets, as a URL wants it.
    Some(format!(
        "# Written by `renkei journal-upload-conf` from renkei.toml [logs]; replaced on every change.\n\
         # Plain HTTP to renkei's service '{}' on loopback, which carries it in TLS to the collector.\n\
         [Upload]\n\
         URL=http://{listen}\n",
        service.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(extra: &str) -> Config {
        let text = format!(
            "{}\n{extra}",
            include_str!("../../../config/disclosing.toml")
        );
        toml::from_str(&text).expect("the example with extra sections")
    }

    const JOURNAL_SERVICE: &str = "[[service]]\nname = \"journal\"\ndirection = \"outbound\"\n\
        listen = \"127.0.0.1:19532\"\ntarget = \"198.19.0.1:19532\"\nserver_name = \"hub.renkei.example\"\n";

    #[test]
    fn log4_logs_become_the_uploaders_url_on_the_services_loopback_listener() {
        let config = config_with(&format!(
            "{JOURNAL_SERVICE}\n[logs]\nupload_service = \"journal\"\n"
        ));
        let text = journal_upload_conf(&config).expect("a drop-in");
        assert!(
            text.contains("[Upload]\nURL=http://127.0.0.1:19532\n"),
            "{text}"
        );
    }

    #[test]
    fn log4_no_logs_section_or_a_service_off_loopback_writes_nothing() {
        assert_eq!(journal_upload_conf(&config_with(JOURNAL_SERVICE)), None);
        let off_loopback = JOURNAL_SERVICE.replace("127.0.0.1", "198.18.10.1");
        let config = config_with(&format!(
            "{off_loopback}\n[logs]\nupload_service = \"journal\"\n"
        ));
        assert_eq!(journal_upload_conf(&config), None);
    }
}
