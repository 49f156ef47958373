import Dispatcher
import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import Testing

/// Unique jobs over HTTP: a job's `unique` key within its window is answered `duplicate: true` with the original
/// id (every answer checked against docs/openapi.yaml by `DispatcherClient`).
@Suite("Unique submissions", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct UniqueSubmissionTests {
    @Test(.timeLimit(.minutes(1)))
    func aUniqueKeyWithinItsWindowAnswersTheOriginalAsADuplicate() async throws {
        let farm = try TestRedis.farm()
        try await withDispatcher(farm: farm) { api in
            let body = #"{"kind": "echo", "payload": {"n": 1}, "unique": {"key": "invoice-9", "windowSeconds": 0.5}}"#
            let first = try await api.post("/v1/jobs", body)
            #expect(first.status == 201)
            let id = try #require(first.json?["id"]?.stringValue)
            #expect(first.json?["duplicate"] == nil)
            let again = try await api.post("/v1/jobs", body)
            #expect(again.status == 201)
            #expect(again.json?["id"]?.stringValue == id)
            #expect(again.json?["duplicate"] == .bool(true))

            // In a bulk, per job; a repeated client id is a duplicate too.
            let bulk = try await api.post("/v1/jobs:bulk", """
                {"jobs": [{"kind": "echo", "unique": {"key": "invoice-9"}}, {"kind": "echo", "id": "client-1"}, {"kind": "echo", "id": "client-1"}]}
                """)
            #expect(bulk.status == 201)
            guard case .array(let items)? = bulk.json?["jobs"] else { Issue.record("no jobs"); return }
            #expect(items.map { $0["duplicate"] } == [.bool(true), nil, .bool(true)])
            #expect(items.map { $0["id"]?.stringValue } == [id, "client-1", "client-1"])

            try await Task.sleep(for: .milliseconds(700))
            let later = try await api.post("/v1/jobs", body)
            #expect(later.json?["duplicate"] == nil)
            #expect(later.json?["id"]?.stringValue != id)

            let bad = try await api.post("/v1/jobs", #"{"kind": "echo", "unique": {"key": "", "windowSeconds": -1, "x": 1}}"#)
            #expect(bad.status == 422)
            #expect(bad.pointers == ["/unique/key", "/unique/windowSeconds", "/unique/x"])
        }
    }
}
