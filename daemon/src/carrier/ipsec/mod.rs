//! The IKEv2/IPsec carrier's parts (issue #16): renkei does not speak IKE or ESP itself; it
//! drives strongSwan's charon over VICI. Lowest first:
//!
//! - `proposal`: the closed CRYPTREC set of IKE and ESP algorithms (NET-10), its strongSwan
//!   names, and the check of what an established SA negotiated.
//! - `charon_conf`: the pinned strongswan.conf charon runs with.
//! - `connection`: one connection to the concentrator and its `load-conn` message.
//! - `sa`: the SAs and events charon reports, as typed values.
//! - `vici`: the client: load key, certificates and the connection; initiate, terminate, list
//!   SAs, events.
//!
//! Only `carrier` names this module; nothing above the carrier seam does.

pub mod charon_conf;
pub mod connection;
pub mod proposal;
pub mod sa;
pub mod vici;
