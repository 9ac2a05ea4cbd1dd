//! Kubernetes Events (leader only): a Warning on the object for each problem the translation finds, the
//! first time it appears (no storm on resync), and a Normal Event when an Ingress is first served.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef as StoreRef, Store};
use tokio::sync::watch;

use crate::model::build::CONTROLLER_NAME;
use crate::model::{Config, Kind, NamespacedName, ObjectRef, Problem};
use crate::source::cluster::Stores;

/// Event notes are limited to 1 kB.
const MAX_NOTE: usize = 1000;

pub struct EventPublisher {
    recorder: Recorder,
    stores: Stores,
}

impl EventPublisher {
    pub fn new(client: kube::Client, identity: String, stores: Stores) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: Some(identity),
        };
        EventPublisher {
            recorder: Recorder::new(client, reporter),
            stores,
        }
    }

    pub async fn run(
        self,
        mut configs: watch::Receiver<Arc<Config>>,
        mut leader: watch::Receiver<bool>,
    ) {
        let mut reported: HashSet<Problem> = HashSet::new();
        let mut served: HashSet<NamespacedName> = HashSet::new();
        let mut previous: Option<Arc<[NamespacedName]>> = None;
        loop {
            tokio::select! {
                changed = configs.changed() => if changed.is_err() { return },
                changed = leader.changed() => if changed.is_err() { return },
            }
            if !*leader.borrow() {
                // A new leader reports what it sees afresh.
                reported.clear();
                served.clear();
                continue;
            }
            let config = configs.borrow_and_update().clone();
            if config.generation == 0 {
                continue;
            }
            for problem in config.problems.iter().filter(|p| !reported.contains(*p)) {
                if let Some(object) = &problem.object {
                    let note = truncate(&problem.message);
                    self.publish(object, EventType::Warning, problem.kind.reason(), note)
                        .await;
                }
            }
            reported = config.problems.iter().cloned().collect();
            // A generation that kept the list of Ingresses (most changes) has nobody new to tell.
            let kept = previous
                .as_ref()
                .is_some_and(|p| Arc::ptr_eq(p, &config.ingresses));
            for ingress in config
                .ingresses
                .iter()
                .filter(|i| !kept && !served.contains(*i))
            {
                let object = ObjectRef::new(Kind::Ingress, &ingress.namespace, &ingress.name);
                self.publish(
                    &object,
                    EventType::Normal,
                    "Served".into(),
                    "Ingress is served by Portcullis".into(),
                )
                .await;
            }
            if !kept {
                served = config.ingresses.iter().cloned().collect();
            }
            previous = Some(config.ingresses.clone());
        }
    }

    async fn publish(&self, object: &ObjectRef, type_: EventType, reason: String, note: String) {
        let Some(reference) = self.reference(object) else {
            return;
        };
        let event = Event {
            type_,
            reason,
            note: Some(note),
            action: "Translate".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(%object, error = %e, "cannot publish Event");
        }
    }

    /// The object's reference with its uid, which `kubectl describe` needs to find the Event.
    fn reference(&self, object: &ObjectRef) -> Option<ObjectReference> {
        fn lookup<K>(store: &Store<K>, object: &ObjectRef) -> Option<ObjectReference>
        where
            K: Resource<DynamicType = ()> + Clone + 'static,
        {
            let key = StoreRef::<K>::new(&object.name);
            let key = if object.namespace.is_empty() {
                key
            } else {
                key.within(&object.namespace)
            };
            store.get(&key).map(|o| o.object_ref(&()))
        }
        let s = &self.stores;
        match object.kind {
            Kind::Ingress => lookup(&s.ingresses, object),
            Kind::IngressClass => lookup(&s.ingress_classes, object),
            Kind::Secret => lookup(&s.secrets, object),
            Kind::Service => lookup(&s.services, object),
            Kind::EndpointSlice => lookup(&s.endpoint_slices, object),
            kind => {
                let g = s.gateway_api.get()?;
                match kind {
                    Kind::Namespace => lookup(&g.namespaces, object),
                    Kind::GatewayClass => lookup(&g.classes, object),
                    Kind::Gateway => lookup(&g.gateways, object),
                    Kind::HttpRoute => lookup(&g.http_routes, object),
                    Kind::GrpcRoute => lookup(g.grpc_routes.as_ref()?, object),
                    Kind::ReferenceGrant => lookup(g.grants.as_ref()?, object),
                    _ => None,
                }
            }
        }
    }
}

fn truncate(message: &str) -> String {
    if message.len() <= MAX_NOTE {
        return message.to_string();
    }
    let mut end = MAX_NOTE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}
