export { backoffDelay, FailureCounter, type BackoffOptions } from "./backoff.js";
export { type ClientEvents, type ClientOptions, type Positions, RequestError, type RoomHandlers, roomUrl, RtClient, type State, type Transport } from "./client.js";
export { Outbox, OutboxFullError } from "./outbox.js";
export type * from "./protocol.js";
export { type Discontinuity, parseEventId, type Position, RoomStream } from "./rooms.js";
