//! The closed set of IKEv2 and ESP algorithms the box may offer or accept (NET-10): the
//! CRYPTREC list's AES with SHA-2 and the NIST curves, nothing else. A config names a proposal
//! field by field from these enums, so anything outside the set fails to parse with the file's
//! line and column; the set is rendered to strongSwan's proposal strings here and nowhere else.
//!
//! After an SA comes up, [`IkeAlgorithms::outside_profile`] and
//! [`EspAlgorithms::outside_profile`] check what charon reports it negotiated (its `list-sas`
//! names), so a peer or a charon that agreed on anything else is caught, not trusted.

use serde::{Deserialize, Serialize};

/// IKE SA encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum IkeEncryption {
    /// AES-GCM with a 128-bit key and a 16-byte ICV.
    #[serde(rename = "aes128gcm")]
    Aes128Gcm,
    /// AES-GCM with a 256-bit key and a 16-byte ICV.
    #[serde(rename = "aes256gcm")]
    Aes256Gcm,
    /// AES-CBC with a 128-bit key (needs an integrity algorithm).
    #[serde(rename = "aes128cbc")]
    Aes128Cbc,
    /// AES-CBC with a 256-bit key (needs an integrity algorithm).
    #[serde(rename = "aes256cbc")]
    Aes256Cbc,
}

impl IkeEncryption {
    fn is_aead(self) -> bool {
        matches!(self, IkeEncryption::Aes128Gcm | IkeEncryption::Aes256Gcm)
    }

    fn strongswan(self) -> &'static str {
        match self {
            IkeEncryption::Aes128Gcm => "aes128gcm16",
            IkeEncryption::Aes256Gcm => "aes256gcm16",
            IkeEncryption::Aes128Cbc => "aes128",
            IkeEncryption::Aes256Cbc => "aes256",
        }
    }
}

/// IKE SA integrity, for AES-CBC only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Integrity {
    /// HMAC-SHA-256 truncated to 128 bits.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// HMAC-SHA-384 truncated to 192 bits.
    #[serde(rename = "hmac-sha384")]
    HmacSha384,
}

impl Integrity {
    fn strongswan(self) -> &'static str {
        match self {
            Integrity::HmacSha256 => "sha256",
            Integrity::HmacSha384 => "sha384",
        }
    }
}

/// IKE pseudo-random function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Prf {
    /// PRF-HMAC-SHA-256.
    #[serde(rename = "prf-hmac-sha256")]
    HmacSha256,
    /// PRF-HMAC-SHA-384 (charon 5.9 needs its `kdf` plugin for it).
    #[serde(rename = "prf-hmac-sha384")]
    HmacSha384,
}

impl Prf {
    fn strongswan(self) -> &'static str {
        match self {
            Prf::HmacSha256 => "prfsha256",
            Prf::HmacSha384 => "prfsha384",
        }
    }
}

/// Diffie-Hellman group: the NIST curves only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum DhGroup {
    /// NIST P-256 (IKE group 19).
    #[serde(rename = "ecp256")]
    Ecp256,
    /// NIST P-384 (IKE group 20).
    #[serde(rename = "ecp384")]
    Ecp384,
}

impl DhGroup {
    fn strongswan(self) -> &'static str {
        match self {
            DhGroup::Ecp256 => "ecp256",
            DhGroup::Ecp384 => "ecp384",
        }
    }
}

/// ESP (CHILD SA) encryption: AES-GCM only, so no separate integrity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum EspEncryption {
    /// AES-GCM with a 128-bit key and a 16-byte ICV.
    #[serde(rename = "aes128gcm")]
    Aes128Gcm,
    /// AES-GCM with a 256-bit key and a 16-byte ICV.
    #[serde(rename = "aes256gcm")]
    Aes256Gcm,
}

impl EspEncryption {
    fn strongswan(self) -> &'static str {
        match self {
            EspEncryption::Aes128Gcm => "aes128gcm16",
            EspEncryption::Aes256Gcm => "aes256gcm16",
        }
    }
}

/// Why an IKE proposal from the config is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// AES-CBC without an integrity algorithm.
    #[error("encryption {0} needs an integrity algorithm (hmac-sha256 or hmac-sha384)")]
    IntegrityMissing(&'static str),
    /// AES-GCM with a separate integrity algorithm (GCM authenticates by itself).
    #[error("encryption {0} is AES-GCM, which takes no separate integrity algorithm")]
    IntegrityWithAead(&'static str),
}

/// One IKE proposal: `{ encryption = "aes256gcm", prf = "prf-hmac-sha384", dh_group = "ecp384" }`
/// (AES-CBC adds `integrity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "IkeProposalFields", into = "IkeProposalFields")]
pub struct IkeProposal {
    encryption: IkeEncryption,
    integrity: Option<Integrity>,
    prf: Prf,
    dh_group: DhGroup,
}

/// The fields as written, before the AEAD/integrity rule is checked.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct IkeProposalFields {
    encryption: IkeEncryption,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    integrity: Option<Integrity>,
    prf: Prf,
    dh_group: DhGroup,
}

impl TryFrom<IkeProposalFields> for IkeProposal {
    type Error = ProposalError;

    fn try_from(f: IkeProposalFields) -> Result<Self, Self::Error> {
        IkeProposal::new(f.encryption, f.integrity, f.prf, f.dh_group)
    }
}

impl From<IkeProposal> for IkeProposalFields {
    fn from(p: IkeProposal) -> Self {
        IkeProposalFields {
            encryption: p.encryption,
            integrity: p.integrity,
            prf: p.prf,
            dh_group: p.dh_group,
        }
    }
}

impl IkeProposal {
    /// A proposal; AES-CBC needs `integrity`, AES-GCM must have none.
    pub fn new(
        encryption: IkeEncryption,
        integrity: Option<Integrity>,
        prf: Prf,
        dh_group: DhGroup,
    ) -> Result<Self, ProposalError> {
        match (encryption.is_aead(), integrity) {
            (true, Some(_)) => Err(ProposalError::IntegrityWithAead(encryption.strongswan())),
            (false, None) => Err(ProposalError::IntegrityMissing(encryption.strongswan())),
            _ => Ok(IkeProposal {
                encryption,
                integrity,
                prf,
                dh_group,
            }),
        }
    }

    /// strongSwan's proposal string (`aes256gcm16-prfsha384-ecp384`, `aes128-sha256-prfsha256-ecp256`).
    pub fn to_strongswan(&self) -> String {
        let mut parts = vec![self.encryption.strongswan()];
        if let Some(integrity) = self.integrity {
            parts.push(integrity.strongswan());
        }
        parts.push(self.prf.strongswan());
        parts.push(self.dh_group.strongswan());
        parts.join("-")
    }
}

/// One ESP proposal: `{ encryption = "aes256gcm", pfs = "ecp384" }` (`pfs` optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EspProposal {
    /// Encryption and integrity (AEAD).
    pub encryption: EspEncryption,
    /// The Diffie-Hellman group of a CHILD SA's own key exchange (perfect forward secrecy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pfs: Option<DhGroup>,
}

impl EspProposal {
    /// strongSwan's proposal string (`aes256gcm16-ecp384`, `aes128gcm16`).
    pub fn to_strongswan(&self) -> String {
        match self.pfs {
            Some(group) => format!("{}-{}", self.encryption.strongswan(), group.strongswan()),
            None => self.encryption.strongswan().to_string(),
        }
    }
}

/// The profile's default offer when a config names none: the strongest first.
pub fn default_ike_proposals() -> Vec<IkeProposal> {
    vec![
        IkeProposal {
            encryption: IkeEncryption::Aes256Gcm,
            integrity: None,
            prf: Prf::HmacSha384,
            dh_group: DhGroup::Ecp384,
        },
        IkeProposal {
            encryption: IkeEncryption::Aes128Gcm,
            integrity: None,
            prf: Prf::HmacSha256,
            dh_group: DhGroup::Ecp256,
        },
    ]
}

/// The profile's default ESP offer: AES-GCM with PFS on the same curves as IKE.
pub fn default_esp_proposals() -> Vec<EspProposal> {
    vec![
        EspProposal {
            encryption: EspEncryption::Aes256Gcm,
            pfs: Some(DhGroup::Ecp384),
        },
        EspProposal {
            encryption: EspEncryption::Aes128Gcm,
            pfs: Some(DhGroup::Ecp256),
        },
    ]
}

/// What charon reports it negotiated for an IKE SA (`list-sas`: `encr-alg`, `encr-keysize`,
/// `integ-alg`, `prf-alg`, `dh-group`), as its names; `None` where it reported nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IkeAlgorithms {
    /// `encr-alg`, e.g. `AES_GCM_16`.
    pub encryption: Option<String>,
    /// `encr-keysize` in bits.
    pub key_size_bits: Option<u32>,
    /// `integ-alg`, e.g. `HMAC_SHA2_256_128` (absent with AES-GCM).
    pub integrity: Option<String>,
    /// `prf-alg`, e.g. `PRF_HMAC_SHA2_256`.
    pub prf: Option<String>,
    /// `dh-group`, e.g. `ECP_256`.
    pub dh_group: Option<String>,
}

/// What charon reports it negotiated for a CHILD SA (ESP).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EspAlgorithms {
    /// `encr-alg`, e.g. `AES_GCM_16`.
    pub encryption: Option<String>,
    /// `encr-keysize` in bits.
    pub key_size_bits: Option<u32>,
    /// `integ-alg` (must be absent: AES-GCM only).
    pub integrity: Option<String>,
    /// `dh-group` of the CHILD SA's own exchange (PFS), when there was one.
    pub dh_group: Option<String>,
}

/// charon's names for the profile's algorithms.
const AES_GCM_16: &str = "AES_GCM_16";
const AES_CBC: &str = "AES_CBC";
const KEY_SIZES_BITS: [u32; 2] = [128, 256];
const INTEGRITY: [&str; 2] = ["HMAC_SHA2_256_128", "HMAC_SHA2_384_192"];
const PRFS: [&str; 2] = ["PRF_HMAC_SHA2_256", "PRF_HMAC_SHA2_384"];
const DH_GROUPS: [&str; 2] = ["ECP_256", "ECP_384"];

fn show(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("none")
}

/// One negotiated algorithm outside the CRYPTREC profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outside {
    /// charon's name for it ("MODP_1024"; "AES_CBC-192" for a key size; "-" for a missing
    /// one): the same in every language, so the page shows it as it is.
    pub name: String,
    /// What it is, in English, for the journal ("DH group MODP_1024").
    pub english: String,
}

fn outside(name: impl Into<String>, english: String) -> Outside {
    Outside {
        name: name.into(),
        english,
    }
}

fn name(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}

fn check_key_size(encryption: &Option<String>, key_size_bits: Option<u32>, out: &mut Vec<Outside>) {
    match key_size_bits {
        Some(bits) if KEY_SIZES_BITS.contains(&bits) => {}
        Some(bits) => out.push(outside(
            format!("{}-{bits}", name(encryption)),
            format!("encryption key size {bits} bits"),
        )),
        None => out.push(outside(
            format!("{}-?", name(encryption)),
            "encryption key size not reported".to_string(),
        )),
    }
}

impl IkeAlgorithms {
    /// Everything outside the profile, in English, one line each; empty when within it.
    pub fn outside_profile(&self) -> Vec<String> {
        self.outside_profile_items()
            .into_iter()
            .map(|o| o.english)
            .collect()
    }

    /// Everything outside the profile, each with charon's name and the English line.
    pub fn outside_profile_items(&self) -> Vec<Outside> {
        let mut out = Vec::new();
        let encryption = self.encryption.as_deref();
        match encryption {
            Some(AES_GCM_16) => {
                if self.integrity.is_some() {
                    out.push(outside(
                        name(&self.integrity),
                        format!("integrity {} beside AES-GCM", show(&self.integrity)),
                    ));
                }
            }
            Some(AES_CBC) => match self.integrity.as_deref() {
                Some(i) if INTEGRITY.contains(&i) => {}
                _ => out.push(outside(
                    name(&self.integrity),
                    format!("integrity {} with AES-CBC", show(&self.integrity)),
                )),
            },
            _ => out.push(outside(
                name(&self.encryption),
                format!("encryption {}", show(&self.encryption)),
            )),
        }
        check_key_size(&self.encryption, self.key_size_bits, &mut out);
        if !self.prf.as_deref().is_some_and(|p| PRFS.contains(&p)) {
            out.push(outside(name(&self.prf), format!("PRF {}", show(&self.prf))));
        }
        if !self
            .dh_group
            .as_deref()
            .is_some_and(|g| DH_GROUPS.contains(&g))
        {
            out.push(outside(
                name(&self.dh_group),
                format!("DH group {}", show(&self.dh_group)),
            ));
        }
        out
    }
}

impl EspAlgorithms {
    /// Everything outside the profile, in English, one line each; empty when within it.
    pub fn outside_profile(&self) -> Vec<String> {
        self.outside_profile_items()
            .into_iter()
            .map(|o| o.english)
            .collect()
    }

    /// Everything outside the profile, each with charon's name and the English line.
    pub fn outside_profile_items(&self) -> Vec<Outside> {
        let mut out = Vec::new();
        if self.encryption.as_deref() != Some(AES_GCM_16) {
            out.push(outside(
                name(&self.encryption),
                format!("ESP encryption {}", show(&self.encryption)),
            ));
        }
        check_key_size(&self.encryption, self.key_size_bits, &mut out);
        if self.integrity.is_some() {
            out.push(outside(
                name(&self.integrity),
                format!("ESP integrity {}", show(&self.integrity)),
            ));
        }
        if let Some(group) = self.dh_group.as_deref() {
            if !DH_GROUPS.contains(&group) {
                out.push(outside(group, format!("ESP PFS group {group}")));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Offer {
        ike: Vec<IkeProposal>,
        esp: Vec<EspProposal>,
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn net10_config_names_render_to_strongswan_proposals() {
        let offer: Offer = toml::from_str(
            r#"
            ike = [
              { encryption = "aes256gcm", prf = "prf-hmac-sha384", dh_group = "ecp384" },
              { encryption = "aes128cbc", integrity = "hmac-sha256", prf = "prf-hmac-sha256", dh_group = "ecp256" },
            ]
            esp = [ { encryption = "aes256gcm", pfs = "ecp384" }, { encryption = "aes128gcm" } ]
            "#,
        )
        .expect("a profile offer parses");
        let ike: Vec<String> = offer.ike.iter().map(IkeProposal::to_strongswan).collect();
        assert_eq!(
            ike,
            [
                "aes256gcm16-prfsha384-ecp384",
                "aes128-sha256-prfsha256-ecp256"
            ]
        );
        let esp: Vec<String> = offer.esp.iter().map(EspProposal::to_strongswan).collect();
        assert_eq!(esp, ["aes256gcm16-ecp384", "aes128gcm16"]);
    }

    #[test]
    fn net10_anything_outside_the_set_is_refused_with_its_position() {
        for (text, expected) in [
            (
                r#"ike = [{ encryption = "3des", prf = "prf-hmac-sha256", dh_group = "ecp256" }]"#,
                "unknown variant `3des`",
            ),
            (
                r#"ike = [{ encryption = "aes128gcm", prf = "prf-hmac-sha1", dh_group = "ecp256" }]"#,
                "unknown variant `prf-hmac-sha1`",
            ),
            (
                r#"ike = [{ encryption = "aes128gcm", prf = "prf-hmac-sha256", dh_group = "modp1024" }]"#,
                "unknown variant `modp1024`",
            ),
            (
                r#"ike = [{ encryption = "aes128gcm", prf = "prf-hmac-sha256", dh_group = "curve25519" }]"#,
                "unknown variant `curve25519`",
            ),
            (
                r#"ike = [{ encryption = "aes128cbc", prf = "prf-hmac-sha256", dh_group = "ecp256" }]"#,
                "needs an integrity algorithm",
            ),
            (
                r#"ike = [{ encryption = "aes128gcm", integrity = "hmac-sha256", prf = "prf-hmac-sha256", dh_group = "ecp256" }]"#,
                "takes no separate integrity",
            ),
            (
                r#"ike = [{ encryption = "aes128gcm", prf = "prf-hmac-sha256", dh_group = "ecp256", esn = "yes" }]"#,
                "unknown field `esn`",
            ),
        ] {
            #[derive(Debug, Deserialize)]
            #[allow(dead_code)]
            struct Ike {
                ike: Vec<IkeProposal>,
            }
            let err = toml::from_str::<Ike>(text).expect_err(text).to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.contains("line 1, column"), "{text}: {err}");
        }
        for text in [
            r#"esp = [{ encryption = "chacha20poly1305" }]"#,
            r#"esp = [{ encryption = "aes128cbc" }]"#,
            r#"esp = [{ encryption = "aes128gcm", pfs = "modp2048" }]"#,
        ] {
            #[derive(Debug, Deserialize)]
            #[allow(dead_code)]
            struct Esp {
                esp: Vec<EspProposal>,
            }
            let err = toml::from_str::<Esp>(text).expect_err(text).to_string();
            assert!(err.contains("unknown variant"), "{text}: {err}");
        }
    }

    #[test]
    fn net10_defaults_are_within_the_profile() {
        assert_eq!(
            default_ike_proposals()
                .iter()
                .map(IkeProposal::to_strongswan)
                .collect::<Vec<_>>(),
            [
                "aes256gcm16-prfsha384-ecp384",
                "aes128gcm16-prfsha256-ecp256"
            ]
        );
        assert_eq!(
            default_esp_proposals()
                .iter()
                .map(EspProposal::to_strongswan)
                .collect::<Vec<_>>(),
            ["aes256gcm16-ecp384", "aes128gcm16-ecp256"]
        );
    }

    #[test]
    fn net10_negotiated_profile_algorithms_pass() {
        let gcm = IkeAlgorithms {
            encryption: some("AES_GCM_16"),
            key_size_bits: Some(128),
            integrity: None,
            prf: some("PRF_HMAC_SHA2_256"),
            dh_group: some("ECP_256"),
        };
        assert_eq!(gcm.outside_profile(), Vec::<String>::new());
        let cbc = IkeAlgorithms {
            encryption: some("AES_CBC"),
            key_size_bits: Some(256),
            integrity: some("HMAC_SHA2_384_192"),
            prf: some("PRF_HMAC_SHA2_384"),
            dh_group: some("ECP_384"),
        };
        assert_eq!(cbc.outside_profile(), Vec::<String>::new());
        let esp = EspAlgorithms {
            encryption: some("AES_GCM_16"),
            key_size_bits: Some(256),
            integrity: None,
            dh_group: None,
        };
        assert_eq!(esp.outside_profile(), Vec::<String>::new());
    }

    #[test]
    fn net10_negotiated_weak_algorithms_are_named() {
        let weak = IkeAlgorithms {
            encryption: some("3DES_CBC"),
            key_size_bits: None,
            integrity: some("HMAC_SHA1_96"),
            prf: some("PRF_HMAC_SHA1"),
            dh_group: some("MODP_1024"),
        };
        assert_eq!(
            weak.outside_profile(),
            [
                "encryption 3DES_CBC",
                "encryption key size not reported",
                "PRF PRF_HMAC_SHA1",
                "DH group MODP_1024"
            ]
        );
        let cbc_sha1 = IkeAlgorithms {
            encryption: some("AES_CBC"),
            key_size_bits: Some(192),
            integrity: some("HMAC_SHA1_96"),
            prf: some("PRF_HMAC_SHA2_256"),
            dh_group: some("CURVE_25519"),
        };
        assert_eq!(
            cbc_sha1.outside_profile(),
            [
                "integrity HMAC_SHA1_96 with AES-CBC",
                "encryption key size 192 bits",
                "DH group CURVE_25519"
            ]
        );
        let esp = EspAlgorithms {
            encryption: some("CHACHA20_POLY1305"),
            key_size_bits: Some(256),
            integrity: some("HMAC_SHA1_96"),
            dh_group: some("MODP_2048"),
        };
        assert_eq!(
            esp.outside_profile(),
            [
                "ESP encryption CHACHA20_POLY1305",
                "ESP integrity HMAC_SHA1_96",
                "ESP PFS group MODP_2048"
            ]
        );
        // The same by charon's names, which the page shows in any language.
        let names = |items: Vec<Outside>| items.into_iter().map(|o| o.name).collect::<Vec<_>>();
        assert_eq!(
            names(weak.outside_profile_items()),
            ["3DES_CBC", "3DES_CBC-?", "PRF_HMAC_SHA1", "MODP_1024"]
        );
        assert_eq!(
            names(cbc_sha1.outside_profile_items()),
            ["HMAC_SHA1_96", "AES_CBC-192", "CURVE_25519"]
        );
        assert_eq!(
            names(esp.outside_profile_items()),
            ["CHACHA20_POLY1305", "HMAC_SHA1_96", "MODP_2048"]
        );
        assert_eq!(
            IkeAlgorithms::default().outside_profile(),
            [
                "encryption none",
                "encryption key size not reported",
                "PRF none",
                "DH group none"
            ]
        );
    }
}
