//! The network operator of the lab: a config signing key, a client certificate from the lab
//! CA, and `renkei sign` / `push` / `confirm` / `remote` run as the real binary inside the data
//! centre's namespace, so every push crosses the hub's tunnel to the box (AUTH-2).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use renkei::signing::SigningKeyPair;

use crate::daemon::renkei_bin;
use renkei::config::ManagementConfig;

use crate::boxconfig::{section_text, socket, ConfigText};
use crate::lab::{Lab, LabCarrier, Node};
use crate::pki::LeafFiles;
use crate::tlstools::{run_bounded, Finished};

/// Port of every box's management API in the lab.
pub const MANAGEMENT_PORT: u16 = 7443;
/// Longest one operator command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(40);

/// The operator's keys and tools.
pub struct Operator {
    /// Folder with the operator's files.
    pub dir: PathBuf,
    /// The config signing key (private; stays here).
    pub signing_key: PathBuf,
    /// Its public key, as boxes trust it.
    pub signing_public: PathBuf,
    /// The operator's TLS client certificate and key, from the lab CA.
    pub client: LeafFiles,
    /// The lab CA that signed the boxes' certificates.
    pub ca: PathBuf,
    /// The identity in the client certificate, which boxes list in
    /// `management.operator_identities`.
    pub identity: String,
    /// `--timeout-secs` of every command.
    timeout_secs: u64,
    /// The lab's carrier: where boxes' management APIs listen.
    carrier: LabCarrier,
}

/// What one operator command printed and whether it succeeded.
#[derive(Debug)]
pub struct Outcome {
    /// Exit status 0.
    pub success: bool,
    /// The JSON answers printed (push prints two: the push answer and the state after it).
    pub answers: Vec<serde_json::Value>,
    /// Everything printed.
    pub output: String,
}

impl Outcome {
    fn from(finished: Finished) -> Outcome {
        let answers = serde_json::Deserializer::from_str(
            finished.output.trim_start_matches(|c: char| c != '{'),
        )
        .into_iter::<serde_json::Value>()
        .filter_map(Result::ok)
        .collect();
        Outcome {
            success: finished.success(),
            answers,
            output: finished.output,
        }
    }

    /// The `error` code of the first answer, if it is an error.
    pub fn error_code(&self) -> Option<&str> {
        self.answers.first().and_then(|a| a["error"].as_str())
    }
}

/// The answer to one raw HTTPS request (see [`Operator::raw_request`]).
#[derive(Debug)]
pub struct RawAnswer {
    /// The HTTP status; `None` when no answer came (a refused TLS handshake, say).
    pub status: Option<u16>,
    /// The body, parsed as JSON (`Null` when it is not).
    pub body: serde_json::Value,
    /// Everything curl printed.
    pub output: String,
}

impl RawAnswer {
    /// The `error` code of the answer.
    pub fn error_code(&self) -> Option<&str> {
        self.body["error"].as_str()
    }
}

impl Operator {
    /// Makes the operator's signing key (with `renkei keygen --operator`) and client
    /// certificate under `<lab>/operator`.
    pub fn new(lab: &Lab) -> anyhow::Result<Operator> {
        Self::with_identity(lab, "operator.renkei.test")
    }

    /// [`Operator::new`] with a client certificate for `identity`: the demo lab names its
    /// operator in the same domain as its boxes, so `pushed_by` reads as one network.
    pub fn with_identity(lab: &Lab, identity: &str) -> anyhow::Result<Operator> {
        let dir = lab.dir.join("operator");
        std::fs::create_dir_all(&dir)?;
        let signing_key = dir.join("signing.key");
        let out = std::process::Command::new(renkei_bin()?)
            .args(["keygen", "--operator", "--private-key"])
            .arg(&signing_key)
            .output()?;
        anyhow::ensure!(out.status.success(), "keygen --operator: {out:?}");
        let client = lab.ca.issue(identity)?.write(&dir, "client")?;
        Ok(Operator {
            signing_public: renkei::keys::public_key_path(&signing_key),
            signing_key,
            client,
            ca: lab.pki_dir().join("operator-ca.crt"),
            dir,
            identity: identity.to_string(),
            timeout_secs: 20,
            carrier: lab.carrier,
        })
    }

    /// [`Operator::with_identity`] with a config signing key the operator already has (made
    /// by `renkei keygen --operator`, as the operator's guide does before any box is
    /// installed): copied into the operator's folder, its public key beside it.
    pub fn with_signing_key(lab: &Lab, identity: &str, key: &Path) -> anyhow::Result<Operator> {
        let text = std::fs::read_to_string(key)
            .with_context(|| format!("reading the signing key {}", key.display()))?;
        let pair = SigningKeyPair::from_pem(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a config signing key: {e}", key.display()))?;
        let dir = lab.dir.join("operator");
        std::fs::create_dir_all(&dir)?;
        let signing_key = dir.join("signing.key");
        crate::pki::write_key(&signing_key, &text)?;
        let signing_public = renkei::keys::public_key_path(&signing_key);
        std::fs::write(&signing_public, pair.public().to_pem())?;
        let client = lab.ca.issue(identity)?.write(&dir, "client")?;
        Ok(Operator {
            signing_public,
            signing_key,
            client,
            ca: lab.pki_dir().join("operator-ca.crt"),
            dir,
            identity: identity.to_string(),
            timeout_secs: 20,
            carrier: lab.carrier,
        })
    }

    /// Bounds every exchange with a box at `secs` (the crash test cuts exchanges short).
    pub fn with_timeout_secs(mut self, secs: u64) -> Self {
        self.timeout_secs = secs;
        self
    }

    /// A second signing key (for rotation and unknown-key tests): `(private, public)` paths.
    pub fn extra_signing_key(&self, name: &str) -> anyhow::Result<(PathBuf, String)> {
        let pair = SigningKeyPair::generate();
        let path = self.dir.join(format!("{name}.key"));
        crate::pki::write_key(&path, &pair.private_pem()?)?;
        Ok((path, pair.public().to_pem()))
    }

    /// The `[management]` section for a box: on its link address (tunnel or closed network), trusting this operator (its
    /// identity and signing key).
    pub fn management(
        &self,
        node: Node,
        confirm_timeout_secs: u64,
        auto_confirm: bool,
    ) -> ManagementConfig {
        ManagementConfig {
            listen: socket(&format!(
                "{}:{MANAGEMENT_PORT}",
                node.link_address(self.carrier)
            )),
            operator_ca_file: PathBuf::from("tls/operator-ca.crt"),
            operator_crl_file: None,
            operator_identities: vec![self.identity.clone()],
            operator_signing_key_file: Some(self.signing_public.clone()),
            operator_signing_key: None,
            next_operator_signing_key_file: None,
            next_operator_signing_key: None,
            confirm_timeout_secs,
            auto_confirm,
            max_push_bytes: renkei::config::DEFAULT_MAX_PUSH_BYTES,
        }
    }

    /// [`Operator::management`] as a `[management]` table, for tests that keep a config as text.
    pub fn management_toml(
        &self,
        node: Node,
        confirm_timeout_secs: u64,
        auto_confirm: bool,
    ) -> String {
        section_text(
            "management",
            &self.management(node, confirm_timeout_secs, auto_confirm),
        )
    }

    /// Writes `text` to `<operator>/<name>` and signs it with `key` (default: the operator's
    /// key) through `renkei sign`. Returns the config path.
    pub fn write_signed(
        &self,
        name: &str,
        config: &(impl ConfigText + ?Sized),
        key: Option<&Path>,
    ) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, config.config_text())?;
        let out = std::process::Command::new(renkei_bin()?)
            .arg("sign")
            .arg("--key")
            .arg(key.unwrap_or(&self.signing_key))
            .arg(&path)
            .output()?;
        anyhow::ensure!(out.status.success(), "renkei sign: {out:?}");
        Ok(path)
    }

    /// Writes `text` to `<operator>/<name>` with a signature by the operator's key made in
    /// this process, without `renkei sign`'s checks: a signed config that `renkei sign` would
    /// refuse (malformed, for no box), as a careless or hostile signer could make one. The box
    /// must refuse it on its own. Returns the config path.
    pub fn write_signed_unchecked(
        &self,
        name: &str,
        config: &(impl ConfigText + ?Sized),
    ) -> anyhow::Result<PathBuf> {
        let text = config.config_text();
        let path = self.dir.join(name);
        std::fs::write(&path, &text)?;
        let pem = std::fs::read_to_string(&self.signing_key)?;
        let pair = SigningKeyPair::from_pem(&pem).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut signature = path.clone().into_os_string();
        signature.push(".sig");
        std::fs::write(signature, format!("{}\n", pair.sign(text.as_bytes())))?;
        Ok(path)
    }

    /// The arguments that name `node`'s management API and the operator's credentials
    /// (`--to`, `--server-name`, `--cert`, `--key`, `--ca`), exactly as an operator types them
    /// after `renkei push`, `confirm` or `remote`: the demo lab prints commands built from these
    /// so they cannot drift from what the tests run.
    pub fn management_args(&self, node: Node) -> Vec<String> {
        vec![
            "--to".into(),
            format!("{}:{MANAGEMENT_PORT}", node.link_address(self.carrier)),
            "--server-name".into(),
            node.tls_name().into(),
            "--cert".into(),
            self.client.cert.display().to_string(),
            "--key".into(),
            self.client.key.display().to_string(),
            "--ca".into(),
            self.ca.display().to_string(),
        ]
    }

    fn target_args(&self, node: Node) -> Vec<String> {
        let mut args = self.management_args(node);
        args.extend(["--timeout-secs".into(), self.timeout_secs.to_string()]);
        args
    }

    fn run(&self, lab: &Lab, args: Vec<String>) -> anyhow::Result<Outcome> {
        let bin = renkei_bin()?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let finished = run_bounded(
            lab.ns(Node::Hub),
            &bin.to_string_lossy(),
            &args,
            b"",
            COMMAND_TIMEOUT,
        )
        .context("running the operator's renkei")?;
        Ok(Outcome::from(finished))
    }

    /// `renkei push` of a signed config file to `node`, from the data centre.
    pub fn push(&self, lab: &Lab, node: Node, config: &Path) -> anyhow::Result<Outcome> {
        let mut args = vec!["push".to_string()];
        args.extend(self.target_args(node));
        args.push(config.display().to_string());
        self.run(lab, args)
    }

    /// `renkei push` with explicit extra arguments (a foreign client certificate, say).
    pub fn push_with(
        &self,
        lab: &Lab,
        node: Node,
        config: &Path,
        replace: &[(&str, String)],
    ) -> anyhow::Result<Outcome> {
        let mut args = vec!["push".to_string()];
        let mut target = self.target_args(node);
        for (flag, value) in replace {
            if let Some(i) = target.iter().position(|a| a == flag) {
                target[i + 1] = value.clone();
            }
        }
        args.extend(target);
        args.push(config.display().to_string());
        self.run(lab, args)
    }

    /// `renkei <subcommand>` (`push`, `confirm`, `remote`) to `node` with some of the
    /// management arguments replaced (another client certificate, say) and `extra` appended.
    pub fn command_with(
        &self,
        lab: &Lab,
        subcommand: &str,
        node: Node,
        replace: &[(&str, String)],
        extra: &[String],
    ) -> anyhow::Result<Outcome> {
        let mut args = vec![subcommand.to_string()];
        let mut target = self.target_args(node);
        for (flag, value) in replace {
            if let Some(i) = target.iter().position(|a| a == flag) {
                target[i + 1] = value.clone();
            }
        }
        args.extend(target);
        args.extend(extra.iter().cloned());
        self.run(lab, args)
    }

    /// One HTTPS request to `node`'s management API with curl from the data centre, for what
    /// `renkei` never sends: no signature header, a push without the read-back after it, no
    /// client certificate (`client` `None`) or another one. `headers` are `Name: value`.
    pub fn raw_request(
        &self,
        lab: &Lab,
        node: Node,
        request: (&str, &str),
        body: Option<&Path>,
        headers: &[String],
        client: Option<&LeafFiles>,
    ) -> anyhow::Result<RawAnswer> {
        let (method, path) = request;
        let name = node.tls_name();
        let mut args: Vec<String> = vec![
            "-sS".into(),
            "--max-time".into(),
            self.timeout_secs.to_string(),
            "-X".into(),
            method.into(),
            "--cacert".into(),
            self.ca.display().to_string(),
            "--resolve".into(),
            format!(
                "{name}:{MANAGEMENT_PORT}:{}",
                node.link_address(self.carrier)
            ),
            "-H".into(),
            "Expect:".into(),
            "-w".into(),
            "\nHTTP_STATUS %{http_code}".into(),
        ];
        if let Some(client) = client {
            args.extend([
                "--cert".into(),
                client.cert.display().to_string(),
                "--key".into(),
                client.key.display().to_string(),
            ]);
        }
        for header in headers {
            args.extend(["-H".into(), header.clone()]);
        }
        if let Some(body) = body {
            args.extend(["--data-binary".into(), format!("@{}", body.display())]);
        }
        args.push(format!("https://{name}:{MANAGEMENT_PORT}{path}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let finished = run_bounded(lab.ns(Node::Hub), "curl", &args, b"", COMMAND_TIMEOUT)
            .context("running curl")?;
        let output = finished.output;
        let (text, status) = match output.rsplit_once("HTTP_STATUS ") {
            Some((text, code)) => (
                text,
                code.trim()
                    .get(..3)
                    .and_then(|c| c.parse::<u16>().ok())
                    .filter(|c| *c != 0),
            ),
            None => (output.as_str(), None),
        };
        let body = text
            .find('{')
            .and_then(|start| {
                serde_json::Deserializer::from_str(&text[start..])
                    .into_iter::<serde_json::Value>()
                    .next()
            })
            .and_then(Result::ok)
            .unwrap_or(serde_json::Value::Null);
        Ok(RawAnswer {
            status,
            body,
            output,
        })
    }

    /// `renkei confirm` to `node`.
    pub fn confirm(&self, lab: &Lab, node: Node, version: Option<u64>) -> anyhow::Result<Outcome> {
        let mut args = vec!["confirm".to_string()];
        args.extend(self.target_args(node));
        if let Some(v) = version {
            args.extend(["--version".to_string(), v.to_string()]);
        }
        self.run(lab, args)
    }

    /// `renkei update <action>` (`push`, `status`) to `node`, `extra` appended (the bundle).
    pub fn update(
        &self,
        lab: &Lab,
        action: &str,
        node: Node,
        extra: &[String],
    ) -> anyhow::Result<Outcome> {
        let mut args = vec!["update".to_string(), action.to_string()];
        args.extend(self.target_args(node));
        args.extend(extra.iter().cloned());
        self.run(lab, args)
    }

    /// `renkei remote <target> <action...>` to `node`, run from `from` (the data centre the
    /// box is reached through: with primary and backup hubs, the one it uses).
    pub fn remote_from(
        &self,
        from: &crate::netns::Namespace,
        node: Node,
        action: &[&str],
    ) -> anyhow::Result<Outcome> {
        let bin = renkei_bin()?;
        let mut args = vec!["remote".to_string()];
        args.extend(self.target_args(node));
        args.extend(action.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let finished = run_bounded(from, &bin.to_string_lossy(), &args, b"", COMMAND_TIMEOUT)
            .context("running the operator's renkei")?;
        Ok(Outcome::from(finished))
    }

    /// `renkei remote` (the box's config state) of `node`.
    pub fn remote(&self, lab: &Lab, node: Node) -> anyhow::Result<Outcome> {
        let mut args = vec!["remote".to_string()];
        args.extend(self.target_args(node));
        self.run(lab, args)
    }
}
