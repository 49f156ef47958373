import Dispatcher
import Foundation
import JobFarmTesting
import JobPayloads
import JobProtocol
import JobQueue
import JobWorker
import Logging
import MLJobs
import Testing

/// The ML kinds' payload checks are one piece of code (`JobPayloads`): the dispatcher refuses a payload that does
/// not fit its kind with the same words the worker dead-letters it with.
@Suite("Payload checks shared by the dispatcher and the worker", .enabled(if: TestRedis.available))
struct PayloadCheckTests {
    @Test(.timeLimit(.minutes(1)))
    func theDispatcherRefusesWhatTheWorkerWouldDeadLetterWithTheSameMessage() async throws {
        let farm = try TestRedis.farm()
        let bad: [(kind: String, payload: String, pointer: String)] = [
            ("inference", #"{"model": "m", "inputs": [[1, 2], [3, 4], [5, 6], [7]]}"#, "/payload/inputs/3"),
            ("inference", #"{"model": "m", "inputs": {"dtype": "float32", "shape": [2, 2], "data": "AAAA"}}"#, "/payload/inputs/data"),
            ("train", #"{"dataset": "d.csv", "name": "m", "epochs": 0}"#, "/payload/epochs"),
            ("quantize", #"{"model": "m"}"#, "/payload/precision"),
        ]
        let details = try await withDispatcher(farm: farm) { api -> [String] in
            var details: [String] = []
            for (kind, payload, pointer) in bad {
                let answer = try await api.post("/v1/jobs", #"{"kind": "\#(kind)", "payload": \#(payload)}"#)
                #expect(answer.status == 422, "\(kind) \(payload)")
                #expect(answer.pointers == [pointer])
                details.append(items(answer.json?["errors"]).first?["detail"]?.stringValue ?? "")
            }
            #expect(try await farm.queues().isEmpty, "nothing invalid reached Redis")
            return details
        }
        // The same payloads enqueued past the dispatcher (the CLI, a foreign client): the worker's handlers run the
        // same check and dead-letter each job non_retryable with the pointer and the detail the 422 gave.
        var logger = Logger(label: "test.ml")
        logger.logLevel = .error
        var registry = HandlerRegistry()
        registerMLJobs(into: &registry, farm: farm, options: MLJobOptions(workerConcurrency: 2, blasThreads: 1, computeThreads: 1), logger: logger)
        try await withTestWorker(farm: farm, registry: registry, queues: ["ml"], concurrency: 2) { _ in
            for ((kind, payload, pointer), detail) in zip(bad, details) {
                let id = try await farm.enqueue(EnqueueRequest(kind: kind, queue: "ml", payload: try JSONValue(parsing: payload)))
                let status = try await farm.wait(for: id, queue: "ml", timeout: .seconds(20))
                #expect(status.state == .dead && status.reason == "non_retryable")
                let relative = String(pointer.dropFirst("/payload".count))
                let message = "payload does not fit kind '\(kind)': \(relative): \(detail)"
                #expect(status.error?.contains(message) == true, "'\(status.error ?? "")' should say '\(message)'")
            }
        }
    }
}
