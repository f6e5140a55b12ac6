//! TCP-ENO (RFC 8547): option codec, negotiation and transcript.
