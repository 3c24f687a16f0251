//! Creating a run's backends and observers, every one the flow uses, collecting every error
//! (a config error names its file, line and key) rather than stopping at the first.
//!
//! Instances come from an [`InstanceFactory`]: the plugins ([`PluginFactory`]) in flowrun,
//! in-process doubles in the run loop's tests.

use std::{sync::Arc, time::Duration};

use super::driver::{shutdown_all, BackendHandle};
use crate::{
    backend::{Backend, EventSender},
    errors::Error,
    flow::{BackendInstance, Flow, Location},
    observe::{Observer, ObserverHub},
    plugins::PluginSet,
};

/// How long a run that failed to set up waits for the backends it did create to shut down.
const SETUP_SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// An observer instance to create: from the flow, or `--observer KIND`.
#[derive(Debug, Clone)]
pub struct ObserverSpec {
    /// Its name.
    pub name: String,
    /// Its plugin kind.
    pub kind: String,
    /// Its config, as TOML text.
    pub config_toml: String,
    /// Where it is declared, if in the flow.
    pub location: Option<Location>,
}

/// Makes backend and observer instances.
pub trait InstanceFactory {
    /// A backend for the flow's instance `inst`, reporting to `sender`.
    fn backend(
        &mut self,
        inst: &BackendInstance,
        sender: Arc<dyn EventSender>,
    ) -> Result<Box<dyn Backend>, Error>;
    /// An observer.
    fn observer(&mut self, spec: &ObserverSpec) -> Result<Box<dyn Observer>, Error>;
}

/// Instances from the plugins on the search path.
pub struct PluginFactory<'a>(pub &'a mut PluginSet);

fn located(location: Option<&Location>, what: String, e: Error) -> Error {
    match e {
        Error::Instance {
            location: None,
            message,
        } => Error::Instance {
            location: location.cloned(),
            message: format!("{what}: {message}"),
        },
        other => other,
    }
}

impl InstanceFactory for PluginFactory<'_> {
    fn backend(
        &mut self,
        inst: &BackendInstance,
        sender: Arc<dyn EventSender>,
    ) -> Result<Box<dyn Backend>, Error> {
        let what = format!("backend `{}` (kind `{}`)", inst.name, inst.kind);
        let plugin = self
            .0
            .plugin_for(&inst.kind, false)
            .map_err(|e| located(Some(&inst.location), what.clone(), e))?;
        plugin
            .new_backend(&inst.kind, &inst.config_toml, sender)
            .map_err(|e| Error::Instance {
                location: Some(inst.location.clone()),
                message: format!("{what}, plugin {}: {e}", plugin.name),
            })
    }

    fn observer(&mut self, spec: &ObserverSpec) -> Result<Box<dyn Observer>, Error> {
        let what = format!("observer `{}` (kind `{}`)", spec.name, spec.kind);
        let plugin = self
            .0
            .plugin_for(&spec.kind, true)
            .map_err(|e| located(spec.location.as_ref(), what.clone(), e))?;
        plugin
            .new_observer(&spec.kind, &spec.config_toml)
            .map_err(|e| Error::Instance {
                location: spec.location.clone(),
                message: format!("{what}, plugin {}: {e}", plugin.name),
            })
    }
}

/// The flow's observers, then one per `--observer KIND` not in the flow already.
pub fn observer_specs(flow: &Flow, extra_kinds: &[String]) -> Vec<ObserverSpec> {
    let mut specs: Vec<ObserverSpec> = flow
        .observers
        .iter()
        .map(|o| ObserverSpec {
            name: o.name.clone(),
            kind: o.kind.clone(),
            config_toml: o.config_toml.clone(),
            location: Some(o.location.clone()),
        })
        .collect();
    for kind in extra_kinds {
        if !specs.iter().any(|o| &o.kind == kind) {
            specs.push(ObserverSpec {
                name: kind.clone(),
                kind: kind.clone(),
                config_toml: String::new(),
                location: None,
            });
        }
    }
    specs
}

/// A run's instances.
pub struct Instances {
    /// Per backend instance of the flow: its handle, when some job uses it.
    pub backends: Vec<Option<BackendHandle>>,
    /// The observers.
    pub hub: ObserverHub,
}

impl Instances {
    /// The created backends.
    pub fn created(&self) -> Vec<BackendHandle> {
        self.backends.iter().flatten().cloned().collect()
    }

    /// Shuts everything down, waiting at most `wait`.
    pub fn shutdown(self, wait: Duration) {
        let stuck = shutdown_all(&self.created(), wait);
        for name in stuck {
            tracing::warn!("backend {name}: shutdown did not finish in time; not waiting");
        }
        for e in self.hub.finish(wait) {
            tracing::warn!("{e}");
        }
    }
}

/// Creates every backend some job uses and every observer; on any error, shuts down what was
/// created and returns all the errors.
pub fn create(
    flow: &Flow,
    factory: &mut dyn InstanceFactory,
    observers: &[ObserverSpec],
    sender: Arc<dyn EventSender>,
) -> Result<Instances, Error> {
    let mut used = vec![false; flow.backends.len()];
    for j in &flow.jobs {
        used[j.backend] = true;
    }
    let mut errors = Vec::new();
    let mut backends = Vec::with_capacity(flow.backends.len());
    for (inst, used) in flow.backends.iter().zip(used) {
        if !used {
            backends.push(None);
            continue;
        }
        match factory.backend(inst, sender.clone()) {
            Ok(b) => backends.push(Some(BackendHandle::new(inst.name.clone(), Arc::from(b)))),
            Err(e) => {
                errors.push(e);
                backends.push(None);
            }
        }
    }
    let mut hub = ObserverHub::default();
    for spec in observers {
        match factory.observer(spec) {
            Ok(o) => hub.add(spec.name.clone(), o),
            Err(e) => errors.push(e),
        }
    }
    let instances = Instances { backends, hub };
    match Error::from_many(errors) {
        None => Ok(instances),
        Some(e) => {
            instances.shutdown(SETUP_SHUTDOWN_WAIT);
            Err(e)
        }
    }
}
