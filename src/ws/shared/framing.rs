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
    /// A frame of the protocol itself (an acknowledgement, a pong): it proves the connection
    /// alive and is otherwise ignored.
    Control,
    /// A frame that cannot be read: counted and skipped, with the reason.
    Bad(String),
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
}

/// The default framing: JSON objects. Out, `{"type":"subscribe","topic":T}` (with `"from":V`
/// when resuming) and `{"type":"unsubscribe","topic":T}`; in, `{"topic":T,"message":M}` routes
/// `M` to topic `T`; any other JSON is a control frame; anything else is bad.
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
/// assert!(matches!(framing.decode("not json"), Inbound::Bad(_)));
/// ```
pub struct JsonFraming<M> {
    _message: PhantomData<fn() -> M>,
}

impl<M> JsonFraming<M> {
    /// The JSON framing for messages of type `M`.
    ///
    /// ```
    /// let _ = livecache::ws::shared::JsonFraming::<serde_json::Value>::new();
    /// ```
    pub fn new() -> Self {
        JsonFraming {
            _message: PhantomData,
        }
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
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(error) => return Inbound::Bad(format!("not JSON: {error}")),
        };
        let Value::Object(mut object) = value else {
            return Inbound::Control;
        };
        let (Some(Value::String(topic)), Some(message)) =
            (object.remove("topic"), object.remove("message"))
        else {
            return Inbound::Control;
        };
        match serde_json::from_value(message) {
            Ok(message) => Inbound::Message { topic, message },
            Err(error) => Inbound::Bad(format!("not a message of topic {topic}: {error}")),
        }
    }
}
