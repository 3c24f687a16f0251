//! The entry points behind the export macros, and the macros themselves. A plugin crate
//! invokes [`crate::export_plugin!`] once and [`crate::register_backend!`] /
//! [`crate::register_observer!`] once per kind; nothing here is called by hand.
//!
//! What a plugin library exports:
//! - the abi_stable root module loader (`_1as_0lib_1header_0root_bmodule_bloader`), as
//!   `#[abi_stable::export_root_module]` would generate it, so plugin crates need no abi_stable
//!   dependency of their own;
//! - two plain C functions, `flowrun_plugin_api_version` and `flowrun_plugin_identity`, that an
//!   older host reads before any layout check;
//! - the identity note ([`crate::identity`]), read by the host without loading the library.

use flowrun_plugin_abi::{
    self as abi,
    abi_stable::std_types::{RResult, RStr},
};

pub use crate::{backend::backend_to_abi, observer::observer_to_abi};
use crate::{guard, logging, BackendKind, ErrorKind, ObserverKind, PluginError, Sink};

/// The manifest: every kind registered in this library.
pub fn __manifest() -> abi::Manifest {
    guard(|| abi::Manifest {
        backends: inventory::iter::<BackendKind>
            .into_iter()
            .map(|k| abi::KindInfo {
                name: k.name.into(),
                description: k.description.into(),
            })
            .collect(),
        observers: inventory::iter::<ObserverKind>
            .into_iter()
            .map(|k| abi::KindInfo {
                name: k.name.into(),
                description: k.description.into(),
            })
            .collect(),
    })
    .unwrap_or_default()
}

/// Called once by the host right after loading.
pub fn __init(host: abi::HostServicesBox) -> RResult<(), abi::PluginError> {
    guard(|| logging::install_host_logger(host))
        .map_err(abi::PluginError::from)
        .into()
}

fn unknown_kind(what: &str, kind: &str) -> PluginError {
    PluginError::new(
        ErrorKind::UNKNOWN_KIND,
        format!("this plugin offers no {what} kind `{kind}`"),
    )
}

/// Creates a backend of `kind`.
pub fn __new_backend(
    kind: RStr<'_>,
    config: RStr<'_>,
    sink: abi::EventSinkBox,
) -> RResult<abi::BackendBox, abi::PluginError> {
    let sink = Sink::from_abi(sink);
    guard(|| {
        let k = inventory::iter::<BackendKind>
            .into_iter()
            .find(|k| k.name == kind.as_str())
            .ok_or_else(|| unknown_kind("backend", kind.as_str()))?;
        let backend = (k.create)(config.as_str(), sink.clone())?;
        Ok(backend_to_abi(backend, sink))
    })
    .and_then(|r| r)
    .map_err(abi::PluginError::from)
    .into()
}

/// Creates an observer of `kind`.
pub fn __new_observer(
    kind: RStr<'_>,
    config: RStr<'_>,
) -> RResult<abi::ObserverBox, abi::PluginError> {
    guard(|| {
        let k = inventory::iter::<ObserverKind>
            .into_iter()
            .find(|k| k.name == kind.as_str())
            .ok_or_else(|| unknown_kind("observer", kind.as_str()))?;
        Ok(observer_to_abi((k.create)(config.as_str())?))
    })
    .and_then(|r| r)
    .map_err(abi::PluginError::from)
    .into()
}

/// Exports the plugin: its root module, the plain version symbols and its identity note. Use
/// once per plugin crate; `name` and `version` must be constants (string literals, `env!`).
///
/// ```ignore
/// flowrun_plugin_sdk::export_plugin!(name = "site", version = env!("CARGO_PKG_VERSION"));
/// ```
// The expansion's `#[no_mangle]`, `#[link_section]` and unsafe block carry no
// `#[allow(unsafe_code)]` on purpose: rustc does not report lints on code that comes from
// another crate's macro, so a plugin crate may `#![forbid(unsafe_code)]` (the in-tree plugins
// without unsafe of their own do), while an `allow` in the expansion would make that forbid a
// hard error (E0453, checked with rustc 1.95). The unsafe block still carries its SAFETY note.
#[macro_export]
macro_rules! export_plugin {
    (name = $name:expr, version = $version:expr $(,)?) => {
        const _: () = {
            const NOTE_FIELDS: &[&str] = &[$crate::PLUGIN_API_VERSION, $name, $version];
            const NOTE_LEN: usize = $crate::identity::record_len(NOTE_FIELDS);
            // The section name is `flowrun_plugin_sdk::identity::SECTION`.
            #[link_section = ".flowrun_plugin"]
            static NOTE: [u8; NOTE_LEN] =
                $crate::identity::record::<NOTE_LEN>($crate::identity::PLUGIN, NOTE_FIELDS);

            #[no_mangle]
            pub extern "C" fn flowrun_plugin_api_version() -> *const ::std::os::raw::c_char {
                $crate::abi::PLUGIN_API_VERSION_C.as_ptr() as *const ::std::os::raw::c_char
            }

            /// The plugin's name and version, `"NAME VERSION"`, as a plain C string: a host
            /// reads it to name the plugin in a version-mismatch message without the ABI.
            #[no_mangle]
            pub extern "C" fn flowrun_plugin_identity() -> *const ::std::os::raw::c_char {
                // An exported function refers to the note, so the linker keeps its section.
                ::std::hint::black_box(&NOTE);
                static ID: ::std::sync::OnceLock<::std::ffi::CString> =
                    ::std::sync::OnceLock::new();
                ID.get_or_init(|| {
                    ::std::ffi::CString::new(::std::format!("{} {}", $name, $version))
                        .unwrap_or_default()
                })
                .as_ptr()
            }

            fn root() -> $crate::abi::PluginRoot_Ref {
                use $crate::abi_stable::prefix_type::PrefixTypeTrait;
                use $crate::abi_stable::std_types::{RResult, RStr};
                extern "C" fn manifest() -> $crate::abi::Manifest {
                    $crate::export::__manifest()
                }
                extern "C" fn init(
                    host: $crate::abi::HostServicesBox,
                ) -> RResult<(), $crate::abi::PluginError> {
                    $crate::export::__init(host)
                }
                extern "C" fn new_backend(
                    kind: RStr<'_>,
                    config: RStr<'_>,
                    sink: $crate::abi::EventSinkBox,
                ) -> RResult<$crate::abi::BackendBox, $crate::abi::PluginError> {
                    $crate::export::__new_backend(kind, config, sink)
                }
                extern "C" fn new_observer(
                    kind: RStr<'_>,
                    config: RStr<'_>,
                ) -> RResult<$crate::abi::ObserverBox, $crate::abi::PluginError> {
                    $crate::export::__new_observer(kind, config)
                }
                $crate::abi::PluginRoot {
                    api_version: RStr::from_str($crate::PLUGIN_API_VERSION),
                    plugin_name: RStr::from_str($name),
                    plugin_version: RStr::from_str($version),
                    manifest,
                    init,
                    new_backend,
                    new_observer,
                }
                .leak_into_prefix()
            }

            // What `#[abi_stable::export_root_module]` generates: abi_stable 0.11's mangled
            // "root module loader" symbol, which the host looks up.
            #[no_mangle]
            #[allow(non_upper_case_globals)]
            pub static _1as_0lib_1header_0root_bmodule_bloader:
                $crate::abi_stable::library::LibHeader = {
                extern "C" fn erased_root() -> $crate::abi_stable::library::RootModuleResult {
                    $crate::abi_stable::library::__call_root_module_loader(root)
                }
                // SAFETY: `from_constructor` requires a constructor that returns the root module
                // of the type it is instantiated with; `erased_root` returns `root()`, a
                // `PluginRoot_Ref`, exactly as abi_stable's own attribute macro arranges it.
                unsafe {
                    $crate::abi_stable::library::LibHeader::from_constructor::<
                        $crate::abi::PluginRoot_Ref,
                    >(
                        erased_root,
                        $crate::abi_stable::library::CheckTypeLayout::Yes,
                    )
                }
            };
        };
    };
}

/// Registers a backend kind of this plugin: the name flows write in `kind = "..."`, a line for
/// `flowrun plugins list`, and the [`crate::BackendFactory`]. `kind` and `description` must be
/// constants.
#[macro_export]
macro_rules! register_backend {
    (kind = $kind:expr, description = $desc:expr, create = $create:expr $(,)?) => {
        $crate::__register_kind!(BackendKind, BACKEND, $kind, $desc, $create);
    };
}

/// Registers an observer kind of this plugin (see [`crate::register_backend!`]).
#[macro_export]
macro_rules! register_observer {
    (kind = $kind:expr, description = $desc:expr, create = $create:expr $(,)?) => {
        $crate::__register_kind!(ObserverKind, OBSERVER, $kind, $desc, $create);
    };
}

/// Both registrations: the kind's record of the identity note, and its inventory entry, which
/// refers to the record so that the linker keeps it.
#[doc(hidden)]
#[macro_export]
macro_rules! __register_kind {
    ($registration:ident, $record:ident, $kind:expr, $desc:expr, $create:expr) => {
        const _: () = {
            const NOTE_FIELDS: &[&str] = &[$kind, $desc];
            const NOTE_LEN: usize = $crate::identity::record_len(NOTE_FIELDS);
            // The section name is `flowrun_plugin_sdk::identity::SECTION`.
            #[link_section = ".flowrun_plugin"]
            static NOTE: [u8; NOTE_LEN] =
                $crate::identity::record::<NOTE_LEN>($crate::identity::$record, NOTE_FIELDS);
            $crate::inventory::submit! {
                $crate::$registration { name: $kind, description: $desc, create: $create, note: &NOTE }
            }
        };
    };
}
