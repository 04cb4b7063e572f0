//! Sinks: where converted messages go besides the message log. The local resource store is
//! written by the store itself (in the message's transaction); this module holds the upstream
//! FHIR forwarder (outbox delivery worker, read proxy client, health check) and its credentials,
//! and the MLLP forwarder that passes accepted v2 messages on to a downstream system.

pub mod auth;
pub mod forward;
pub mod upstream;
