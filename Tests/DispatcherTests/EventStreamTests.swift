@testable import Dispatcher
import Foundation
import JobFarmTesting
import JobKinds
import JobProtocol
@testable import JobQueue
import JobWorker
import Testing

/// One Server-Sent Event.
struct ServerSentEvent: Equatable {
    var id: Int64?
    var event: String?
    var data: String
}

/// The events of an event-stream text and how many comment lines (heartbeats) it had.
func parseEventStream(_ text: String) -> (events: [ServerSentEvent], comments: Int) {
    var events: [ServerSentEvent] = []
    var comments = 0
    for block in text.components(separatedBy: "\n\n") where !block.isEmpty {
        var event = ServerSentEvent(data: "")
        var hasField = false
        for line in block.split(separator: "\n") {
            if line.hasPrefix(":") { comments += 1; continue }
            hasField = true
            if line.hasPrefix("id: ") { event.id = Int64(line.dropFirst(4)) }
            if line.hasPrefix("event: ") { event.event = String(line.dropFirst(7)) }
            if line.hasPrefix("data: ") { event.data += String(line.dropFirst(6)) }
        }
        if hasField { events.append(event) }
    }
    return (events, comments)
}

@Suite("Job events (Server-Sent Events)", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct EventStreamTests {
    @Test(.timeLimit(.minutes(1)))
    func progressThenTheFinalStateWithIdsHeartbeatsAndResumption() async throws {
        let farm = try TestRedis.farm()
        var configuration = DispatcherConfiguration(port: 0, authentication: .disabled)
        configuration.eventHeartbeat = .milliseconds(200)
        configuration.maxWait = .seconds(3)
        configuration.defaultWait = .seconds(1)
        try await withTestWorker(farm: farm, registry: .builtins(), queues: nil, concurrency: 2) { _ in
            try await waitUntilRegistered(farm)
            try await withDispatcher(farm: farm, configuration: configuration) { api in
                let created = try await api.post("/v1/jobs", #"{"kind": "sleep", "payload": {"seconds": 1.2, "steps": 3}}"#)
                let id = try #require(created.json?["id"]?.stringValue)
                let stream = try await api.get("/v1/jobs/\(id)/events")
                #expect(stream.status == 200)
                #expect(stream.contentType == "text/event-stream")
                let (events, heartbeats) = parseEventStream(stream.text)
                #expect(heartbeats >= 1, "idle stretches carry heartbeat comments:\n\(stream.text)")
                let final = try #require(events.last)
                #expect(final.event == "final")
                #expect(events.dropLast().allSatisfy { $0.event == "progress" }, "progress events, then the final one")
                let finalJob = try JSONValue(parsing: final.data)
                #expect(finalJob["state"] == .string("succeeded"))
                #expect(finalJob["result"]?["slept"] == .number(1.2))
                let ids = events.compactMap(\.id)
                #expect(ids.count == events.count, "every event has an id")
                #expect(ids == ids.sorted() && Set(ids).count == ids.count, "ids grow: \(ids)")
                let progress = events.dropLast().compactMap { try? JSONValue(parsing: $0.data)["progress"]?.doubleValue }
                #expect(progress.count >= 2 && progress == progress.sorted(), "progress on the way: \(progress)")

                // Resumed after the second event: only what is newer (the job's state now: final).
                let resumed = try await api.call("GET", "/v1/jobs/\(id)/events", headers: ["Last-Event-ID": "\(ids[1])"])
                #expect(parseEventStream(resumed.text).events.map(\.id) == [ids.last!])
                // Resumed after the final event: nothing more (204 tells an EventSource to stop reconnecting).
                let done = try await api.call("GET", "/v1/jobs/\(id)/events", headers: ["Last-Event-ID": "\(ids.last!)"])
                #expect(done.status == 204)
                #expect(try await api.get("/v1/jobs/nope/events").status == 404)

                // A stream lasts at most the longest wait; the client reconnects with Last-Event-ID.
                let later = try await api.post("/v1/jobs", #"{"kind": "noop", "delaySeconds": 60}"#)
                let laterID = try #require(later.json?["id"]?.stringValue)
                let clock = ContinuousClock()
                let start = clock.now
                let cut = try await api.get("/v1/jobs/\(laterID)/events")
                #expect(clock.now - start < .seconds(8))
                let cutEvents = parseEventStream(cut.text).events
                #expect(cutEvents.map(\.event) == ["progress"] && cutEvents.first?.data.contains(#""state":"scheduled""#) == true)
                let again = try await api.call("GET", "/v1/jobs/\(laterID)/events", headers: ["Last-Event-ID": "\(cutEvents.first?.id ?? 0)"])
                #expect(parseEventStream(again.text).events.isEmpty, "nothing new since")
            }
        }
    }

    @Test func eventIdsGrowOverAJobsLife() {
        func status(_ state: JobState, attempts: Int, progress: Double? = nil) -> JobStatus {
            JobStatus(id: "j", queue: "q", kind: "sleep", tier: "standard", state: state, attempts: attempts, maxAttempts: 5,
                      leaseLosses: 0, enqueuedAt: nil, startedAt: nil, finishedAt: nil, runAt: nil, progress: progress, result: nil,
                      error: nil, reason: nil, worker: nil, history: [], cancelRequested: false)
        }
        let life = [
            status(.queued, attempts: 0), status(.running, attempts: 1), status(.running, attempts: 1, progress: 0.5),
            status(.retrying, attempts: 1, progress: 0.5), status(.running, attempts: 2), status(.running, attempts: 2, progress: 0.1),
            status(.succeeded, attempts: 2, progress: 1),
        ].map(JobEventID.of)
        #expect(life == life.sorted() && Set(life).count == life.count, "\(life)")
        #expect(JobEventID.ofSpooled(cancelled: false) == 0)
        #expect(JobEventID.ofSpooled(cancelled: true) == JobEventID.of(status(.cancelled, attempts: 0)))
    }
}
