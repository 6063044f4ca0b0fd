//! The IKEv2/IPsec carrier's parts (issue #16): renkei does not speak IKE or ESP itself; it
//! drives strongSwan's charon over VICI. Lowest first:
//!
//! - `proposal` (in `config`, which parses it): the closed CRYPTREC set of IKE and ESP
//!   algorithms (NET-10), its strongSwan names, and the check of what an established SA
//!   negotiated.
//! - `charon_conf`: the pinned strongswan.conf charon runs with.
//! - `connection`: one connection to the concentrator and its `load-conn` message.
//! - `sa`: the SAs and events charon reports, as typed values.
//! - `vici`: the client: load key, certificates and the connection; initiate, terminate, list
//!   SAs, events.
//! - `settings`: what the carrier is built from (`[ipsec]`, the box's TLS identity), and the
//!   strongswan.conf charon must run with.
//! - `device`: the TUN device of renkei's own the box's address lives on.
//! - `refusal`: which charon log lines say a negotiation was refused, and why.
//! - `record`: the connection's state as last observed (pure).
//! - `hubs`: a primary and a backup concentrator (`[ipsec.failover]`), the hub group's state
//!   machine over charon's SAs (pure).
//! - `backend`: the running carrier, [`Ipsec`], and its handle.
//!
//! Only `carrier` names this module; nothing above the carrier seam does.

pub mod backend;
pub mod charon_conf;
pub mod connection;
pub mod device;
pub mod hubs;
pub mod record;
pub mod refusal;
/// The closed set of proposals lives with the config that names them (`[ipsec]`).
pub use crate::config::proposal;
pub mod sa;
pub mod settings;
pub mod vici;

pub use backend::{Ipsec, IpsecError, IpsecGuard, IpsecHandle};
