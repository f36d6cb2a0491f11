//! A small sans-IO 9P client. Placeholder until the client is written below.
