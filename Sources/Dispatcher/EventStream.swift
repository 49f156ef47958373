import Hummingbird
import JobProtocol
import JobQueue
import NIOCore
import ServiceLifecycle

/// `GET /v1/jobs/{id}/events`: the job's changes as Server-Sent Events (`text/event-stream`).
///
/// One `progress` event per change while the job is not final (state, progress or attempts: the data is the job
/// as `GET /v1/jobs/{id}` shows it), then one `final` event, then the stream ends. Every event has an `id:` that grows
/// over the job's life (`JobEventID`); a client reconnecting with `Last-Event-ID` gets only what is newer (and 204 when
/// it has seen the final event already). A comment line (`: heartbeat`) every `eventHeartbeat` keeps idle
/// connections open through proxies. A stream lasts at most the longest wait (`maxWait`, 60 s by default): then it
/// ends and the client reconnects with `Last-Event-ID` (an `EventSource` does so by itself). Woken by the farm's published events (`JobFarm.wait`), which the scripts send
/// only while someone listens: the subscription lives only while a client does.
extension Dispatcher {
    /// `Last-Event-ID`: the id of the last Server-Sent Event a reconnecting client saw.
    static func lastEventID(_ headers: HTTPFields) -> String? {
        headers.first { $0.name.canonicalName == "last-event-id" }?.value
    }

    func events(id: String, lastEventID: String?) async throws -> Response {
        guard JobID.isValid(id) else { throw Problem.notFound(job: id) }
        let seen = lastEventID.flatMap { Int64($0.trimmingWhitespace) } ?? -1
        let farm = self.farm
        // The job must exist before the stream starts: an unknown id is a 404, not an empty stream.
        var first = try await spooledStatus(id: id)
        if first == nil {
            let status = try Self.visible(try await redisCall({ try await farm.status(id: id) }), id: id)
            first = Self.statusJSON(status)
            if status.state.isTerminal, JobEventID.of(status) <= seen { return Response(status: .noContent) }
        }
        let heartbeat = configuration.eventHeartbeat
        let limit = configuration.maxWait
        let dispatcher = self
        let body = ResponseBody { writer in
            var last = seen
            func send(_ name: String, _ eventID: Int64, _ data: JSONValue) async throws {
                guard eventID > last else { return }
                last = eventID
                try await writer.write(ByteBuffer(string: "id: \(eventID)\nevent: \(name)\ndata: \(data.jsonText)\n\n"))
            }
            // While spooled: the outbox has no events, so it is looked at every 100 ms.
            let clock = ContinuousClock()
            let deadline = clock.now + limit
            var lastWrite = clock.now
            while clock.now < deadline, let spooled = try await dispatcher.spooledStatus(id: id) {
                let cancelled = spooled["state"] == .string("cancelled")
                try await send(cancelled ? "final" : "progress", JobEventID.ofSpooled(cancelled: cancelled), spooled)
                if cancelled {
                    try await writer.finish(nil)
                    return
                }
                if clock.now - lastWrite >= heartbeat {
                    try await writer.write(ByteBuffer(string: ": heartbeat\n\n"))
                    lastWrite = clock.now
                }
                if Task.isCancelled { break }
                try? await Task.sleep(for: .milliseconds(100))
            }
            // In Redis: each wait re-reads the job, sees every progress change on the way, and ends at the heartbeat.
            let (updates, continuation) = AsyncStream.makeStream(of: JobStatus?.self)
            let producer = Task {
                while !Task.isCancelled {
                    let remaining = deadline - clock.now
                    if remaining <= .zero { break }
                    do {
                        let status = try await farm.wait(for: id, timeout: min(heartbeat, remaining)) { continuation.yield($0) }
                        continuation.yield(status)
                        break
                    } catch JobFarmError.timedOut(_) {
                        continuation.yield(nil)  // a heartbeat
                    } catch {
                        break
                    }
                }
                continuation.finish()
            }
            do {
                try await withGracefulShutdownHandler {
                    for await update in updates {
                        guard let status = update else {
                            try await writer.write(ByteBuffer(string: ": heartbeat\n\n"))
                            continue
                        }
                        if status.state.isTerminal {
                            try await send("final", JobEventID.of(status), Self.statusJSON(status))
                            break
                        }
                        try await send("progress", JobEventID.of(status), Self.statusJSON(status))
                    }
                } onGracefulShutdown: {
                    producer.cancel()
                }
            } catch {
                producer.cancel()  // the client went away
                throw error
            }
            producer.cancel()
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }
}

/// The `id:` of a job's events: a number that grows over the job's life, so `Last-Event-ID` says what a client saw.
/// attempts × 100,000 + phase × 1,001 + progress in thousandths; phase 0 waiting (queued, scheduled), 1 running,
/// 2 retrying, 9 final. A spooled job's events have ids 0 (waiting) and 9,009 (cancelled).
enum JobEventID {
    static func of(_ status: JobStatus) -> Int64 {
        let phase: Int64
        switch status.state {
        case .queued, .scheduled: phase = 0
        case .running: phase = 1
        case .retrying: phase = 2
        default: phase = 9
        }
        let permille = Int64(((status.progress ?? 0) * 1000).rounded()).clamped(0, 1000)
        return Int64(status.attempts) * 100_000 + phase * 1_001 + (phase == 9 ? 1000 : permille)
    }

    static func ofSpooled(cancelled: Bool) -> Int64 { cancelled ? 9 * 1_001 + 1000 : 0 }
}

extension Int64 {
    fileprivate func clamped(_ low: Int64, _ high: Int64) -> Int64 { Swift.min(Swift.max(self, low), high) }
}
