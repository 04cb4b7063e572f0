//! Sinks: where converted messages go besides the message log. The local resource store is
//! written by the store itself (in the message's transaction); this module holds the upstream
//! FHIR forwarder (outbox delivery worker, read proxy client, health check) and its credentials.

pub mod auth;
pub mod upstream;
