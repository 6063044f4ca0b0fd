//! `renkei passwd`: the status page's password and TOTP second factor, set on the box.

pub(crate) fn passwd() -> anyhow::Result<()> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(
        password.chars().count() >= 12,
        "the password must be at least 12 characters"
    );
    let salt = SaltString::generate(&mut OsRng);
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    println!("{hash}");
    Ok(())
}

/// Tries at typing the code before `passwd --totp` gives up.
const TOTP_ENROL_TRIES: usize = 3;

pub(crate) fn passwd_totp(state_dir: &std::path::Path) -> anyhow::Result<()> {
    use renkei::status::second_factor::{self, Enrolled, FactorStore};
    let store = FactorStore::new(state_dir);
    let secret = second_factor::new_secret()?;
    let uri = second_factor::otpauth_uri(&secret);
    println!("{}", second_factor::qr_text(&uri)?);
    println!("key: {secret}");
    if store.path().exists() {
        println!("(this replaces the second factor enrolled before)");
    }
    for _ in 0..TOTP_ENROL_TRIES {
        println!("code from the app:");
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line)? == 0 {
            anyhow::bail!("no code given: nothing stored");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        match Enrolled::enrol(&secret, line.trim(), now)? {
            Ok((factor, recovery_codes)) => {
                store.save(&factor)?;
                store.hand_to_owner_of(state_dir)?;
                println!("stored in {}", store.path().display());
                println!("recovery codes (each works once; shown only now):");
                for code in recovery_codes {
                    println!("  {code}");
                }
                return Ok(());
            }
            Err(_) => println!("wrong code: type the newest code the app shows"),
        }
    }
    anyhow::bail!("no right code after {TOTP_ENROL_TRIES} tries: nothing stored")
}
