//! Which charon log lines say that a negotiation was refused, and why: the box's initiator
//! receiving NO_PROPOSAL_CHOSEN or AUTHENTICATION_FAILED from the concentrator, or refusing
//! the concentrator's proposals or certificate itself. Pure, so it is tested on the lines
//! charon 5.9 writes; the lab tests check it against real charons.

use crate::state::events::IpsecRefusal;

use super::vici::ViciError;

/// Lines (substrings) that mean no proposal was acceptable to both sides.
const NO_PROPOSAL: [&str; 2] = ["NO_PROPOSAL_CHOSEN", "received proposals unacceptable"];
/// Lines that mean one side refused the other's authentication or certificate.
const AUTHENTICATION: [&str; 5] = [
    "AUTHENTICATION_FAILED",
    "signatures not acceptable",
    "constraint check failed",
    "public key found for",
    "none verified",
];

/// What `line` says about a refused negotiation, if anything.
pub fn of_line(line: &str) -> Option<IpsecRefusal> {
    if NO_PROPOSAL.iter().any(|p| line.contains(p)) {
        Some(IpsecRefusal::NoProposalChosen)
    } else if AUTHENTICATION.iter().any(|p| line.contains(p)) {
        Some(IpsecRefusal::AuthenticationFailed)
    } else {
        None
    }
}

/// The first refusal in a command's log, with the line saying it.
pub fn of_error(error: &ViciError) -> Option<(IpsecRefusal, String)> {
    match error {
        ViciError::Refused { log, .. } => log
            .iter()
            .find_map(|line| of_line(line).map(|why| (why, line.clone()))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net10_log2_charon_lines_name_the_refusal() {
        for (line, want) in [
            (
                "received NO_PROPOSAL_CHOSEN notify error",
                Some(IpsecRefusal::NoProposalChosen),
            ),
            (
                "received proposals unacceptable",
                Some(IpsecRefusal::NoProposalChosen),
            ),
            (
                "received AUTHENTICATION_FAILED notify error",
                Some(IpsecRefusal::AuthenticationFailed),
            ),
            (
                "constraint check failed: RSA-1024 signatures not acceptable",
                Some(IpsecRefusal::AuthenticationFailed),
            ),
            (
                "no trusted ECDSA public key found for 'hub.renkei.example'",
                Some(IpsecRefusal::AuthenticationFailed),
            ),
            ("IKE_SA dc[1] established between 198.18.0.10", None),
            ("sending packet: from 198.18.0.10[4500]", None),
        ] {
            assert_eq!(of_line(line), want, "{line}");
        }
        let refused = ViciError::Refused {
            command: "initiate",
            message: "establishing CHILD_SA 'dc' failed".into(),
            log: vec![
                "initiating IKE_SA dc[1] to 198.18.0.1".into(),
                "received NO_PROPOSAL_CHOSEN notify error".into(),
            ],
        };
        assert_eq!(
            of_error(&refused),
            Some((
                IpsecRefusal::NoProposalChosen,
                "received NO_PROPOSAL_CHOSEN notify error".into()
            ))
        );
        let hung = ViciError::Timeout {
            command: "initiate",
            timeout: std::time::Duration::from_secs(1),
        };
        assert_eq!(of_error(&hung), None);
    }
}
