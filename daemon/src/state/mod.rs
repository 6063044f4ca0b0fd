//! Runtime state that several parts of the daemon read and write: the event ring and the
//! snapshot of the running configuration. It sits below the parts that fill it (tunnel, control)
//! and the parts that show it (status), so none of them has to import another to share it.
//!
//! - [`config_snapshot`]: the running and pending configuration, as control reports it.
//! - [`events`]: the bounded ring of recent events, with its rate limit for refusals.
//! - [`hub_preference`]: the operator's preferred hub of a hub group, kept across restarts.
//! - [`link`]: the state of a link to the data centre, in every carrier's words.
//! - [`moment`]: a moment on the monotonic and the wall clock (ages never follow a clock step).
//! - [`operator_contact`]: when the operator last reached the box with an authenticated
//!   management request (proof of the link for a carrier without handshakes).

pub mod config_snapshot;
pub mod events;
pub mod hub_preference;
pub mod link;
pub mod moment;
pub mod operator_contact;
