import JobPayloads
import JobProtocol
import JobWorker

/// Reads a kind's payload with its `JobPayloads` check (the one the dispatcher runs); a payload that does not fit
/// becomes `JobError.nonRetryable` with every problem and its pointer, the text the dispatcher's 422 gives.
func parse<P: KindPayload>(_ type: P.Type, _ payload: JSONValue) throws -> P {
    do {
        return try P(parsing: payload)
    } catch {
        throw JobError.nonRetryable(error.description)
    }
}

/// The `train`/`validate` held-out split (defined with the payloads).
public typealias Holdout = JobPayloads.Holdout
