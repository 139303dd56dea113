//! How a shared connection's frames look (R31): the user's choice, with a JSON default.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::core::Version;

/// What an incoming text frame is, as the framing reads it.
///
/// ```
/// use livecache::ws::shared::Inbound;
/// let frame: Inbound<u32> = Inbound::Message { topic: "chat/redux".into(), message: 7 };
/// assert!(matches!(frame, Inbound::Message { .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound<M> {
    /// A message for a topic.
    Message {
        /// The topic it belongs to.
        topic: String,
        /// The message.
        message: M,
    },
    /// The server took the subscription of `topic` (for a framing whose server acknowledges
    /// them: [`Framing::acknowledges_subscriptions`]).
    Subscribed {
        /// The topic.
        topic: String,
    },
    /// A frame of the protocol itself (a pong, an event of no topic): it proves the connection
    /// alive and is otherwise ignored.
    Control,
    /// A frame that cannot be read, skipped with the reason: when it names its topic, that
    /// topic's entry is told (its stream traces `stream_skipped`, R22), else it is dropped.
    Bad {
        /// The topic it named, if it could be read that far.
        topic: Option<String>,
        /// Why it was skipped.
        reason: String,
    },
}

/// The framing of a shared connection (R31): the names of the frames that subscribe and
/// unsubscribe a topic, and how an incoming frame is routed to its topic. Implement it for your
/// server's protocol, or use [`JsonFraming`].
///
/// ```
/// use livecache::core::Version;
/// use livecache::ws::shared::{Framing, Inbound};
///
/// /// A line protocol: `SUB topic`, `UNSUB topic`, and `topic|text` messages.
/// struct Lines;
/// impl Framing for Lines {
///     type Message = String;
///     fn subscribe(&self, topic: &str, _from: Option<Version>) -> String { format!("SUB {topic}") }
///     fn unsubscribe(&self, topic: &str) -> String { format!("UNSUB {topic}") }
///     fn decode(&self, text: &str) -> Inbound<String> {
///         match text.split_once('|') {
///             Some((topic, text)) => Inbound::Message { topic: topic.into(), message: text.into() },
///             None => Inbound::Control,
///         }
///     }
/// }
/// assert_eq!(Lines.subscribe("redux", None), "SUB redux");
/// assert_eq!(Lines.decode("redux|hi"), Inbound::Message { topic: "redux".into(), message: "hi".into() });
/// ```
pub trait Framing: Send + Sync + 'static {
    /// The messages of every topic.
    type Message: Send + 'static;

    /// The frame that subscribes `topic`; `from` is set when the topic's entry resumes after a
    /// reconnect (R32: replay from this version).
    fn subscribe(&self, topic: &str, from: Option<Version>) -> String;

    /// The frame that unsubscribes `topic`.
    fn unsubscribe(&self, topic: &str) -> String;

    /// Read an incoming text frame.
    fn decode(&self, text: &str) -> Inbound<Self::Message>;

    /// Whether the server acknowledges each subscription ([`Inbound::Subscribed`]). If it does,
    /// an entry resubscribed after a reconnect resyncs once its subscription is acknowledged,
    /// so no message falls between its snapshot and the server's taking the subscription; if
    /// not (the default), it resyncs as soon as the subscription is sent.
    fn acknowledges_subscriptions(&self) -> bool {
        false
    }
}

/// The default framing: JSON objects. Out, `{"type":"subscribe","topic":T}` (with `"from":V`
/// when resuming) and `{"type":"unsubscribe","topic":T}`; in, `{"topic":T,"message":M}` routes
/// `M` to topic `T`, `{"type":"subscribed","topic":T}` acknowledges a subscription (used when
/// [`JsonFraming::acknowledged`] says the server sends it), any other JSON is a control frame,
/// anything else is bad.
///
/// ```
/// use livecache::ws::shared::{Framing, Inbound, JsonFraming};
/// let framing = JsonFraming::<u64>::new();
/// assert_eq!(framing.subscribe("redux", None), r#"{"topic":"redux","type":"subscribe"}"#);
/// assert_eq!(
///     framing.decode(r#"{"topic":"redux","message":7}"#),
///     Inbound::Message { topic: "redux".into(), message: 7 }
/// );
/// assert_eq!(framing.decode(r#"{"type":"ack"}"#), Inbound::Control);
/// assert!(matches!(framing.decode("not json"), Inbound::Bad { topic: None, .. }));
/// ```
pub struct JsonFraming<M> {
    validate: Option<Validate<M>>,
    acknowledged: bool,
    _message: PhantomData<fn() -> M>,
}

/// A message check ([`JsonFraming::validate`]).
type Validate<M> = Box<dyn Fn(&M) -> bool + Send + Sync>;

impl<M> JsonFraming<M> {
    /// The JSON framing for messages of type `M`.
    ///
    /// ```
    /// let _ = livecache::ws::shared::JsonFraming::<serde_json::Value>::new();
    /// ```
    pub fn new() -> Self {
        JsonFraming {
            validate: None,
            acknowledged: false,
            _message: PhantomData,
        }
    }

    /// The server acknowledges each subscription with `{"type":"subscribed","topic":T}`: an
    /// entry resubscribed after a reconnect resyncs once it is acknowledged (see
    /// [`Framing::acknowledges_subscriptions`]).
    ///
    /// ```
    /// use livecache::ws::shared::{Framing, Inbound, JsonFraming};
    /// let framing = JsonFraming::<u64>::new().acknowledged();
    /// assert!(framing.acknowledges_subscriptions());
    /// let ack = framing.decode(r#"{"type":"subscribed","topic":"t"}"#);
    /// assert_eq!(ack, Inbound::Subscribed { topic: "t".into() });
    /// ```
    pub fn acknowledged(mut self) -> Self {
        self.acknowledged = true;
        self
    }

    /// Skip a message that `valid` refuses (the streaming guide's `isMessage`): its topic's
    /// entry is told, and it is not applied.
    ///
    /// ```
    /// use livecache::ws::shared::{Framing, Inbound, JsonFraming};
    /// let framing = JsonFraming::<u64>::new().validate(|n| *n > 0);
    /// let zero = framing.decode(r#"{"topic":"t","message":0}"#);
    /// assert!(matches!(zero, Inbound::Bad { topic: Some(t), .. } if t == "t"));
    /// ```
    pub fn validate(mut self, valid: impl Fn(&M) -> bool + Send + Sync + 'static) -> Self {
        self.validate = Some(Box::new(valid));
        self
    }
}

impl<M> Default for JsonFraming<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: DeserializeOwned + Send + 'static> Framing for JsonFraming<M> {
    type Message = M;

    fn subscribe(&self, topic: &str, from: Option<Version>) -> String {
        let mut frame = json!({ "type": "subscribe", "topic": topic });
        if let (Some(from), Some(object)) = (from, frame.as_object_mut()) {
            object.insert("from".into(), json!(from));
        }
        frame.to_string()
    }

    fn unsubscribe(&self, topic: &str) -> String {
        json!({ "type": "unsubscribe", "topic": topic }).to_string()
    }

    fn decode(&self, text: &str) -> Inbound<M> {
        // One pass for a well-formed frame; a frame that does not read as an envelope with a
        // message of type `M` is read again as JSON, to say what is wrong and with which topic.
        if let Ok(envelope) = serde_json::from_str::<Envelope<M>>(text) {
            match envelope {
                Envelope {
                    kind: Some(kind),
                    topic: Some(topic),
                    ..
                } if kind == "subscribed" => return Inbound::Subscribed { topic },
                Envelope {
                    topic: Some(topic),
                    message: Some(message),
                    ..
                } => {
                    return if self.validate.as_ref().is_none_or(|valid| valid(&message)) {
                        Inbound::Message { topic, message }
                    } else {
                        Inbound::Bad {
                            topic: Some(topic),
                            reason: "the message failed validation".into(),
                        }
                    };
                }
                // A topic without a message, or with `null`: the slow path tells them apart.
                Envelope { topic: None, .. } => return Inbound::Control,
                Envelope { .. } => {}
            }
        }
        self.decode_slowly(text)
    }

    fn acknowledges_subscriptions(&self) -> bool {
        self.acknowledged
    }
}

/// A frame of the JSON framing, read in one pass: its type, its topic, its message.
#[derive(serde::Deserialize)]
struct Envelope<M> {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default = "none")]
    message: Option<M>,
}

/// No message (a frame without one).
fn none<M>() -> Option<M> {
    None
}

impl<M: DeserializeOwned> JsonFraming<M> {
    /// [`Framing::decode`] of a frame that did not read as an envelope: as JSON, then its
    /// message, to say what is wrong.
    fn decode_slowly(&self, text: &str) -> Inbound<M> {
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(error) => {
                return Inbound::Bad {
                    topic: None,
                    reason: format!("not JSON: {error}"),
                };
            }
        };
        let Value::Object(mut object) = value else {
            return Inbound::Control;
        };
        if object.get("type").and_then(Value::as_str) == Some("subscribed")
            && let Some(Value::String(topic)) = object.remove("topic")
        {
            return Inbound::Subscribed { topic };
        }
        let (Some(Value::String(topic)), Some(message)) =
            (object.remove("topic"), object.remove("message"))
        else {
            return Inbound::Control;
        };
        match serde_json::from_value::<M>(message) {
            Ok(message) if self.validate.as_ref().is_none_or(|valid| valid(&message)) => {
                Inbound::Message { topic, message }
            }
            Ok(_) => Inbound::Bad {
                topic: Some(topic),
                reason: "the message failed validation".into(),
            },
            Err(error) => Inbound::Bad {
                topic: Some(topic),
                reason: format!("not a message: {error}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A JSON value of the kinds a frame's fields may hold.
    fn field() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z\\\\\"]{0,6}".prop_map(Value::from),
            Just(json!("subscribed")),
            Just(json!({"id": 1})),
            Just(json!([1, 2])),
            Just(json!(true)),
        ]
    }

    /// A frame: an object with some of `type`, `topic`, `message` and another field, or another
    /// JSON value, or text that is not JSON.
    fn frame() -> impl Strategy<Value = String> {
        let topic = prop_oneof![
            3 => "[a-z]{0,3}".prop_map(|t| Some(Value::from(t))),
            1 => proptest::option::of(field()),
        ];
        let object = (
            proptest::option::of(field()),
            topic,
            proptest::option::weighted(0.8, field()),
            proptest::option::of(field()),
        )
            .prop_map(|(kind, topic, message, other)| {
                let mut object = serde_json::Map::new();
                for (name, value) in [
                    ("type", kind),
                    ("topic", topic),
                    ("message", message),
                    ("x", other),
                ] {
                    if let Some(value) = value {
                        object.insert(name.into(), value);
                    }
                }
                Value::Object(object).to_string()
            });
        prop_oneof![
            4 => object,
            1 => field().prop_map(|v| v.to_string()),
            1 => "[{}\\[\\]a-z:,\"0-9 ]{0,12}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_048))]
        /// The one-pass decoding reads every frame as reading it as JSON first does.
        #[test]
        fn one_pass_decoding_agrees_with_reading_json_first(text in frame()) {
            let numbers = JsonFraming::<u64>::new().validate(|n| n % 2 == 0);
            prop_assert_eq!(numbers.decode(&text), numbers.decode_slowly(&text));
            let values = JsonFraming::<Value>::new();
            prop_assert_eq!(values.decode(&text), values.decode_slowly(&text));
            let maybe = JsonFraming::<Option<u64>>::new();
            prop_assert_eq!(maybe.decode(&text), maybe.decode_slowly(&text));
        }
    }
}
