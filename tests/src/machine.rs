//! One line naming the machine a benchmark ran on. Machines of the same kind differ (one gave
//! the tunnel 5.4 Gbit/s, another 6.2, with the same build), so a figure is only comparable
//! with figures from the machine its report names.

/// The instruction-set features the tunnel's and TLS's crypto choose their code by (ring picks
/// AVX2 ChaCha20-Poly1305 and VAES AES-GCM where it finds them).
const CRYPTO_FEATURES: [&str; 4] = ["avx2", "avx512f", "vaes", "sha_ni"];

/// `Machine: <CPU model>, <n> CPUs (<crypto features>), kernel <release>.` from /proc; a
/// part that cannot be read shows as `?`.
pub fn describe() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    describe_from(
        &cpuinfo,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
    )
}

fn describe_from(cpuinfo: &str, kernel: &str) -> String {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_string())
        })
    };
    let model = field("model name").unwrap_or_else(|| "?".into());
    let cpus = cpuinfo
        .lines()
        .filter(|line| line.split(':').next().map(str::trim) == Some("processor"))
        .count();
    let flags = field("flags").unwrap_or_default();
    let features: Vec<&str> = CRYPTO_FEATURES
        .into_iter()
        .filter(|feature| flags.split_whitespace().any(|flag| flag == *feature))
        .collect();
    let kernel = if kernel.is_empty() { "?" } else { kernel };
    format!(
        "Machine: {model}, {cpus} CPUs ({}), kernel {kernel}.\n",
        if features.is_empty() {
            format!("none of {}", CRYPTO_FEATURES.join(", "))
        } else {
            features.join(" ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_model_the_cpus_the_crypto_features_and_the_kernel() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f aes vaes\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f aes vaes\n";
        assert_eq!(
            describe_from(cpuinfo, "6.18.44"),
            "Machine: AMD EPYC, 2 CPUs (avx2 avx512f vaes), kernel 6.18.44.\n"
        );
    }

    #[test]
    fn an_unreadable_proc_shows_question_marks() {
        assert_eq!(
            describe_from("", ""),
            "Machine: ?, 0 CPUs (none of avx2, avx512f, vaes, sha_ni), kernel ?.\n"
        );
    }

    #[test]
    fn this_machine_is_described() {
        let line = describe();
        assert!(line.starts_with("Machine: "), "{line}");
        assert!(!line.contains(" 0 CPUs"), "{line}");
    }
}
