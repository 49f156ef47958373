import JobPayloads
import JobProtocol

/// The ML kinds' payload checks (`JobPayloads`, the code the worker's handlers run) as the dispatcher's
/// `PayloadValidator`s: a payload that does not fit its kind is refused with 422 and pointers under `/payload`.
struct KindPayloadValidator: PayloadValidator {
    let type: any KindPayload.Type

    func problems(in payload: JSONValue, at pointer: String) -> [FieldProblem] {
        type.problems(in: payload).map { FieldProblem(pointer: pointer + $0.pointer, $0.detail) }
    }
}

extension DispatcherConfiguration {
    /// One validator per ML kind (`inference`, `batch_analysis`, `quantize`, `validate`, `train`): the default of
    /// `payloadValidators`.
    public static let kindPayloadValidators: [String: any PayloadValidator] = Dictionary(
        uniqueKeysWithValues: KindPayloads.all.map { ($0.kind, KindPayloadValidator(type: $0) as any PayloadValidator) })
}
