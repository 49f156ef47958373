import Dispatcher
import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import Testing

@Suite("Dispatcher configuration and submission checks (no Redis)")
struct ValidationTests {
    let validator = SubmissionValidator(configuration: DispatcherConfiguration(bulkLimit: 3), farm: JobFarmConfiguration())

    func problems(_ body: String) throws -> [String] {
        switch validator.single(try JSONValue(parsing: body)) {
        case .success: return []
        case .failure(let problems): return problems.items.map { $0.pointer ?? "?" }.sorted()
        }
    }

    @Test func defaultRoutingSendsTheMLKindsToMLAndTheRestToDefault() {
        let table = RoutingTable.default
        for kind in ["inference", "batch_analysis", "quantize", "validate", "train"] { #expect(table.queue(for: kind) == "ml") }
        for kind in ["noop", "echo", "sleep", "fail"] { #expect(table.queue(for: kind) == "default") }
        #expect(table.queue(for: "resize") == nil)
    }

    @Test func environmentOverridesTheDefaultsAndNamesWhatIsWrong() throws {
        let configuration = try DispatcherConfiguration(environment: [
            "JOBFARM_SERVE_HOST": "0.0.0.0", "JOBFARM_SERVE_PORT": "9000", "JOBFARM_SERVE_BULK_LIMIT": "50",
            "JOBFARM_SERVE_BODY_LIMIT": "65536", "JOBFARM_SERVE_ROUTES": "resize=images, echo=default", "JOBFARM_SERVE_MAX_WAIT": "2m",
        ])
        #expect(configuration.host == "0.0.0.0")
        #expect(configuration.port == 9000)
        #expect(configuration.bulkLimit == 50)
        #expect(configuration.bodyLimitBytes == 65536)
        #expect(configuration.routing == RoutingTable(["resize": "images", "echo": "default"]))
        #expect(configuration.maxWait == .seconds(120))
        let untouched = try DispatcherConfiguration(environment: [:])
        #expect(untouched.port == 8080 && untouched.bulkLimit == 1000 && untouched.routing == .default)
        #expect(throws: JobFarmError.self) { try DispatcherConfiguration(environment: ["JOBFARM_SERVE_PORT": "eighty"]) }
        #expect(throws: JobFarmError.self) { try DispatcherConfiguration(environment: ["JOBFARM_SERVE_ROUTES": "resize"]) }
        #expect(throws: JobFarmError.self) { try DispatcherConfiguration(environment: ["JOBFARM_SERVE_ROUTES": "a=bad queue"]) }
        #expect(throws: JobFarmError.self) { try DispatcherConfiguration(environment: ["JOBFARM_SERVE_BULK_LIMIT": "0"]) }
    }

    @Test func durationsTooLargeOrInfiniteAreRefusedInsteadOfTrapping() {
        // Each of these trapped (Int64 conversion overflow) before, ending the process: a wait?timeout=… of a client
        // would have taken the dispatcher down.
        for text in ["99999999999999999999", "1e300s", "inf", "infs", "1e17d", "nan"] { #expect(Duration.parse(text) == nil, "\(text)") }
        #expect(Duration.parse("1e3ms") == .seconds(1))
        #expect(Duration.parse("30s") == .seconds(30))
    }

    @Test func aValidJobBecomesAnEnqueueRequestRoutedByKind() throws {
        let request = try validator.single(try JSONValue(parsing: """
            {"kind": "inference", "tier": "premium", "payload": {"model": "m", "inputs": [[1, 2]]}, "maxAttempts": 2, "timeoutSeconds": 1.5, "delaySeconds": 3, "id": "my-1"}
            """)).get()
        #expect(request.queue == "ml")
        #expect(request.tier == "premium")
        #expect(request.maxAttempts == 2)
        #expect(request.timeout == .milliseconds(1500))
        #expect(request.delay == .seconds(3))
        #expect(request.id == "my-1")
        #expect(request.payload == .object(["model": .string("m"), "inputs": .array([.array([.number(1), .number(2)])])]))
        let defaults = try validator.single(try JSONValue(parsing: #"{"kind": "echo"}"#)).get()
        #expect(defaults.queue == "default" && defaults.tier == "standard" && defaults.maxAttempts == 5 && defaults.payload == .null)
    }

    @Test func everyProblemOfEveryLayerIsReportedAtOnce() throws {
        // Fields (unknown member, types, sizes), cross-field (runAt with delaySeconds), domain (kind, tier).
        #expect(try problems("""
            {"kind": "resize", "tier": "gold", "maxAttempts": 0, "timeoutSeconds": "5", "runAt": "2030-01-01T00:00:00Z",
             "delaySeconds": 5, "colour": "red", "id": "has space"}
            """) == ["/colour", "/id", "/kind", "/maxAttempts", "/runAt", "/tier", "/timeoutSeconds"])
        #expect(try problems(#"{"tier": 3, "runAt": "tomorrow", "delaySeconds": -1}"#) == ["/delaySeconds", "/kind", "/runAt", "/tier"])
        #expect(try problems(#"[1, 2]"#) == [""])
        #expect(try problems(#"{"kind": "echo", "a/b": 1}"#) == ["/a~1b"])
    }

    @Test func bulkChecksEveryJobAndTheLimit() throws {
        let result = validator.bulk(try JSONValue(parsing: #"{"jobs": [{"kind": "echo"}, {"kind": "nope"}, {"tier": "free", "maxAttempts": 1.5}]}"#))
        guard case .failure(let problems) = result else { Issue.record("accepted"); return }
        #expect(problems.items.map { $0.pointer ?? "" }.sorted() == ["/jobs/1/kind", "/jobs/2/kind", "/jobs/2/maxAttempts"])
        guard case .failure(let tooMany) = validator.bulk(try JSONValue(parsing: #"{"jobs": [{"kind":"echo"},{"kind":"echo"},{"kind":"echo"},{"kind":"echo"}]}"#)) else {
            Issue.record("accepted 4 jobs over a limit of 3"); return
        }
        #expect(tooMany.items.map(\.pointer) == ["/jobs"])
        guard case .failure(let shape) = validator.bulk(try JSONValue(parsing: #"{"jobs": {}, "extra": 1}"#)) else { Issue.record("accepted"); return }
        #expect(shape.items.map { $0.pointer ?? "" }.sorted() == ["/extra", "/jobs"])
        #expect(try validator.bulk(try JSONValue(parsing: #"{"jobs": [{"kind": "echo"}, {"kind": "train", "payload": {"dataset": "d.csv", "name": "m"}}]}"#)).get().map(\.queue) == ["default", "ml"])
    }

    @Test func payloadValidatorsAddTheirProblemsUnderThePayload() throws {
        struct NeedsModel: PayloadValidator {
            func problems(in payload: JSONValue, at pointer: String) -> [FieldProblem] {
                payload["model"] == nil ? [FieldProblem(pointer: pointer + "/model", "required")] : []
            }
        }
        let checked = SubmissionValidator(
            configuration: DispatcherConfiguration(payloadValidators: ["inference": NeedsModel()]), farm: JobFarmConfiguration())
        guard case .failure(let problems) = checked.single(try JSONValue(parsing: #"{"kind": "inference", "payload": {}}"#)) else {
            Issue.record("accepted"); return
        }
        #expect(problems.items.map(\.pointer) == ["/payload/model"])
    }
}
