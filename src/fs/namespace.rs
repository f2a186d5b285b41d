//! Keys to paths: directory entries and attributes from listings.
