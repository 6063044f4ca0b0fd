//! The facility administrator's status page in the namespace lab (OPS-1, OPS-3, OPS-4, AUTH-1,
//! LOG-3, INT-1): real `renkei` daemons, requests from `curl`/`openssl` on the facility LAN (or
//! in the data centre for the operator's metrics listener), `promtool` on the metrics, and the
//! real `renkei status` command. Nothing here talks to the server in-process. The enrolment
//! page of a box without a configuration is tested in `enrolment.rs`.

mod browser;
mod buttons;
mod facilities;
mod fixtures;
mod hardening;
mod japanese;
mod login;
mod metrics;
mod page;
mod pushes;
mod second_factor;
mod services;
