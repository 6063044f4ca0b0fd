//! TLS for every proxied and management connection: the CRYPTREC high-security profile
//! (`docs/crypto-profile.md`), the box's certificates and their hot reload, and peer
//! identity allowlists.
//!
//! Nothing outside `profile` names a cipher suite, group or signature scheme, nothing outside
//! `certificate_profile` a key type, curve or signature algorithm a certificate may carry, and
//! nothing here can widen the profile. The parts the proxy uses:
//! - [`CredentialStore`]: loads `[tls]` files, publishes [`TlsMaterial`] through `watch`,
//!   reloads on SIGHUP (`reload`) or file change (`spawn_watcher`), keeping the old material
//!   when a new file is broken;
//! - [`TlsMaterial::server_config`] / [`TlsMaterial::client_config`] (or `acceptor` /
//!   `connector`), read once per connection;
//! - [`PeerIdentities`]: who a verified peer is, and whether a service's allowlist admits it.

pub mod certificate_profile;
pub mod credentials;
pub mod identity;
pub mod profile;
pub mod refusal;
pub mod store;
pub mod verified_chains;

pub use credentials::{CertExpiry, CertRole, CredentialError, Credentials};
pub use identity::{IdentityError, PeerIdentities};
pub use profile::ProfileError;
pub use refusal::TlsRefusal;
pub use store::{CredentialStore, StoreError, TlsMaterial};
