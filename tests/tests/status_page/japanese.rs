//! The Japanese page says nothing in English, on every carrier (LOG-3, OPS-6).

use std::time::Duration;

use renkei_lab::lab::LabCarrier;
use renkei_lab::operator::Operator;
use renkei_lab::{require_root, wait_until, Daemon, Lab, Node};
use serde_json::Value;

use crate::fixtures::{
    clinic_base, data_centre_with_documents, full_clinic_with_page_and_window, post_login,
    push_pending, run_browser, viewer_fetches_a_document, OPERATOR_IDENTITY,
};

/// The texts of one language of web-ui/i18n.js (`key: "text"` lines of its block).
fn catalogue(lang: &str) -> Vec<String> {
    let i18n = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web-ui/i18n.js"),
    )
    .expect("web-ui/i18n.js");
    let start = format!("    {lang}: {{");
    let block = i18n
        .split_once(start.as_str())
        .and_then(|(_, rest)| rest.split_once("\n    },"))
        .map(|(block, _)| block.to_string())
        .unwrap_or_else(|| panic!("no {lang} block in web-ui/i18n.js"));
    block
        .lines()
        .filter_map(|line| {
            let (_, text) = line.trim().split_once(": \"")?;
            Some(text.strip_suffix("\",")?.replace("\\\"", "\""))
        })
        .collect()
}

/// Words both languages write the same: protocols, programs and the box's name.
const TERMS: &[&str] = &[
    "API",
    "CA",
    "CHILD",
    "CRYPTREC",
    "CSR",
    "DH",
    "ESP",
    "ID",
    "IKE",
    "IKEv2",
    "IP",
    "IPsec",
    "LAN",
    "NET-8",
    "PFS",
    "PRF",
    "SA",
    "SHA-256",
    "SIGHUP",
    "TLS",
    "TOTP",
    "UDP",
    "VICI",
    "WireGuard",
    "charon",
    "net.ipv4.ip_forward=0",
    "renkei",
    "sysctl",
];

/// The English catalogue cut into what a page could show of it: each text split at its
/// placeholders, optional parts and punctuation, kept when it has an English word (two letters
/// or more) and is not only [`TERMS`].
fn english_fragments() -> Vec<String> {
    let mut fragments: Vec<String> = catalogue("en")
        .iter()
        .flat_map(|text| {
            let mut plain = String::new();
            let mut in_placeholder = false;
            for c in text.chars() {
                match c {
                    '{' => in_placeholder = true,
                    '}' => {
                        in_placeholder = false;
                        plain.push('\n');
                    }
                    '[' | ']' | '(' | ')' | ':' | ';' | '"' => plain.push('\n'),
                    _ if !in_placeholder => plain.push(c),
                    _ => {}
                }
            }
            plain
                .split('\n')
                .map(|f| f.trim_matches(|c: char| c.is_whitespace() || c == ',' || c == '.'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|f| {
            f.split(|c: char| !c.is_ascii_alphabetic())
                .any(|word| word.len() >= 2)
        })
        .filter(|f| !f.split_whitespace().all(|token| TERMS.contains(&token)))
        .collect();
    fragments.sort();
    fragments.dedup();
    fragments
}

/// Where `fragment` stands in `text` as whole words (not inside a longer word, or a name such
/// as `hub.renkei.example`).
fn contains_words(text: &str, fragment: &str) -> bool {
    let is_word =
        |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || "_.-@/".contains(c));
    text.match_indices(fragment).any(|(at, _)| {
        !is_word(text[..at].chars().next_back())
            && !is_word(text[at + fragment.len()..].chars().next())
    })
}

/// The event of `code` in a status document, once there is one.
fn event_with_code(daemon: &Daemon, code: &str) -> Option<Value> {
    let status = daemon.status().ok()?;
    status["events"]
        .as_array()?
        .iter()
        .find(|e| e["code"] == code)
        .cloned()
}

#[test]
fn log3_ops6_the_japanese_page_of_a_clinic_with_a_refused_handshake_a_rollback_and_a_failed_login_has_no_english(
) {
    require_root!();
    no_english_on_a_japanese_clinic_page(LabCarrier::WireGuard);
}

/// The same on an IPsec clinic, whose page lists charon's SAs and renkei's view of charon.
#[test]
fn log3_ops6_net9_the_japanese_page_of_an_ipsec_clinic_has_no_english() {
    require_root!();
    no_english_on_a_japanese_clinic_page(LabCarrier::Ipsec);
}

/// The same on a closed-network clinic (no tunnel: the page lists the link's probe).
#[test]
fn log3_ops6_net9_the_japanese_page_of_a_closed_network_clinic_has_no_english() {
    require_root!();
    no_english_on_a_japanese_clinic_page(LabCarrier::Closed);
}

/// A clinic that saw a refused handshake, a rollback and a failed login: its Japanese page
/// shows none of the English catalogue's texts and none of the box's English words.
fn no_english_on_a_japanese_clinic_page(carrier: LabCarrier) {
    let lab = Lab::with_carrier(carrier).expect("lab");
    let operator = Operator::with_identity(&lab, OPERATOR_IDENTITY).expect("operator");
    let (documents, _hub, _hospital) = data_centre_with_documents(&lab);
    // The shortest confirm window, so the unconfirmed push below is rolled back soon.
    let (clinic, config) = full_clinic_with_page_and_window(&lab, &operator, 30);
    let lan = lab.lan_ns(Node::Clinic);
    let base = clinic_base();

    // A failed login from the LAN.
    let wrong = post_login(lan, &base, "not the password at all", &[]);
    assert_eq!(wrong.status, 401, "{wrong:?}");
    // A viewer fetches a document: the on-demand tunnel comes up, and the operator reaches
    // the box's management API through it.
    viewer_fetches_a_document(lan, &documents);
    // Handshakes the management API refuses: a client certificate of another CA, and none.
    let foreign = renkei_lab::pki::Ca::new("Foreign CA")
        .and_then(|ca| ca.issue(OPERATOR_IDENTITY))
        .and_then(|leaf| leaf.write(&lab.dir.join("foreign"), "operator"))
        .expect("foreign operator certificate");
    for client in [Some(&foreign), None] {
        let _ = operator.raw_request(&lab, Node::Clinic, ("GET", "/v1/config"), None, &[], client);
    }
    // A push the operator never confirms: rolled back when its window ends.
    push_pending(&lab, &operator, Node::Clinic, 2, &config);
    let rolled_back = wait_until(Duration::from_secs(60), "the rollback", || {
        event_with_code(&clinic, "config_rolled_back")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", clinic.log_text()));
    assert_eq!(rolled_back["params"]["reason"], "confirm_window_expired");
    assert_eq!(rolled_back["params"]["running_version"], 1);
    // The JSON API keeps the English for operators, beside the code.
    let document = clinic.status().expect("status");
    let refusals: Vec<&Value> = document["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["code"] == "management_tls_refused")
                .collect()
        })
        .unwrap_or_default();
    let reasons: Vec<&str> = refusals
        .iter()
        .filter_map(|e| e["params"]["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"unknown_issuer") && reasons.contains(&"no_client_certificate"),
        "{refusals:#?}"
    );
    assert!(
        refusals.iter().all(|e| e["params"]["error"]
            .as_str()
            .is_some_and(|error| !error.is_empty())
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("TLS handshake from"))),
        "{refusals:#?}"
    );
    assert!(
        event_with_code(&clinic, "login_failed").is_some(),
        "{document:#}"
    );

    // A closed network has no link to bring up or take down: no buttons for that.
    assert_eq!(
        document["tunnel_actions"],
        carrier != LabCarrier::Closed,
        "{document:#}"
    );
    let (result, _) = run_browser(&lab, lan, &base, &serde_json::json!({}));
    let fragments = english_fragments();
    assert!(fragments.len() > 200, "{fragments:?}");
    let key = match carrier {
        LabCarrier::WireGuard => lab.public_key(Node::Clinic).to_string(),
        _ => String::new(),
    };
    for read in [&result["initial"], &result["japanese"]] {
        assert_eq!(read["lang"], "ja");
        // Names are the PKI's and the config's, not the page's: the box's WireGuard key (base64,
        // any letters) and the certificates' subjects ("lab operator CA") are left out.
        let mut text = read["body_text"].as_str().unwrap_or("").to_string();
        if !key.is_empty() {
            text = text.replace(&key, "");
        }
        for certificate in document["certificates"].as_array().into_iter().flatten() {
            if let Some(subject) = certificate["subject"].as_str() {
                text = text.replace(subject, "");
            }
        }
        events_say(
            read,
            &[
                "証明書ではありません",
                "クライアント証明書が提示されませんでした",
                "確認期限までに確認されませんでした",
                "パスワードが違います",
            ],
        );
        let english: Vec<&String> = fragments
            .iter()
            .filter(|f| contains_words(&text, f))
            .collect();
        assert!(
            english.is_empty(),
            "English on the Japanese page: {english:?}\n{text}"
        );
        // Nor the box's own English words: the raw TLS errors and the events' messages.
        for event in document["events"].as_array().into_iter().flatten() {
            for words in [
                &event["params"]["error"],
                &event["params"]["detail"],
                &event["message"],
            ] {
                if let Some(words) = words.as_str().filter(|w| w.len() >= 8) {
                    assert!(!text.contains(words), "{words:?} on the Japanese page");
                }
            }
        }
        // Every field of the carrier has a label of the page's own, not the API's name.
        assert!(read["backend"]
            .as_array()
            .is_some_and(|rows| !rows.is_empty()));
        for row in read["backend"].as_array().into_iter().flatten() {
            assert_ne!(row["label"], row["field"], "{row:#}");
        }
        // Times are local dates, not seconds since 1970.
        for time in read["event_times"].as_array().into_iter().flatten() {
            let time = time.as_str().unwrap_or("");
            assert!(
                time.contains('/') && !time.chars().all(|c| c.is_ascii_digit()),
                "{time}"
            );
        }
    }
    // The English page says the same in English, from the same codes.
    events_say(
        &result["english"],
        &[
            "certificate not issued by the operator's CA",
            "no client certificate",
            "not confirmed in time",
            "wrong password",
        ],
    );
}

/// Asserts that the events table the browser read has each of `needles` in its texts.
fn events_say(read: &Value, needles: &[&str]) {
    let texts = read["event_texts"].to_string();
    for needle in needles {
        assert!(texts.contains(needle), "{needle}: {texts}");
    }
}
