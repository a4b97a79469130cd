//! Redis: the shared price table and snapshot blobs (being written).
