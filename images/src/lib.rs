//! OCI images for sandboxes: pull from registries, load offline archives,
//! keep a content-addressed store under `$MSB_HOME/images` (an OCI image
//! layout), unpack every layer once, and build per-image root trees that
//! sandboxes serve read-only.
//!
//! - [`Store`]: [`Store::pull`] (async; [`Store::pull_blocking`]),
//!   [`Store::load`], [`Store::list`], [`Store::inspect`],
//!   [`Store::remove`], [`Store::prune`], and [`Store::root`] for a
//!   sandbox root ([`ImageRoot`]: its path and [`ImageConfig`]).
//! - Every blob is verified against its digest before it is renamed into
//!   `blobs/`; uncompressed layers against their diff IDs before their
//!   staging tree is renamed into `layers/`. A failure leaves nothing
//!   half-stored; an interrupted download resumes.
//! - Unpacking is exact and confined (see [`unpack`]): the files belong to
//!   the user who pulled, the image's owners, modes, file types and
//!   device numbers live in the `user.msb.override_stat` record that
//!   `virtiofsd-msb`'s stat virtualization serves to the guest.
//! - Roots are the layers merged with hard links (see [`flatten`]).
//!
//! Plain HTTP is used only for loopback registries or with `insecure`.

mod blobs;
pub mod digest;
mod error;
pub mod flatten;
mod fsutil;
mod layerdir;
mod layout;
mod load;
mod lock;
mod model;
pub mod paths;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod spec;
mod store;
pub mod unpack;
pub mod user;

pub use digest::Digest;
pub use error::{Error, Result};
pub use load::LoadOptions;
pub use model::{Image, ImageConfig, ImageId, ImageRoot, Layer};
pub use progress::{Event, Progress};
pub use reference::{ImageRef, Platform};
pub use registry::pull::PullOptions;
pub use store::{GcReport, Removed, Store};
pub use user::User;
