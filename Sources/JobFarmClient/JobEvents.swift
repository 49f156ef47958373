import AsyncHTTPClient
import Foundation
import JobProtocol
import NIOCore
import NIOHTTP1

/// One Server-Sent Event of a job: `progress` (state, progress or attempts changed) or `final` (the last one).
public struct JobEvent: Sendable, Equatable {
    /// The event's `id:`; pass it as `lastEventID` to resume after it.
    public var id: String?
    /// `progress` or `final`.
    public var name: String
    /// The job as `GET /v1/jobs/{id}` shows it at this event.
    public var job: Job

    public var isFinal: Bool { name == "final" }
}

/// A job's events (`JobFarmClient.events`): an `AsyncSequence` that ends after the `final` event, reconnecting with
/// `Last-Event-ID` whenever a stream ends before it.
public struct JobEvents: AsyncSequence, Sendable {
    public typealias Element = JobEvent
    let client: JobFarmClient
    let id: String
    let lastEventID: String?

    /// Connection failures in a row before the sequence throws (each reconnect waits a little longer).
    public var reconnectAttempts = 5

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(client: client, id: id, lastEventID: lastEventID, reconnectAttempts: reconnectAttempts)
    }

    /// Reads one stream after another until the final event.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let client: JobFarmClient
        let id: String
        /// The last event seen: what a reconnect sends as `Last-Event-ID`.
        public private(set) var lastEventID: String?
        let reconnectAttempts: Int
        var body: HTTPClientResponse.Body.AsyncIterator?
        var parser = ServerSentEventParser()
        var finished = false
        var failures = 0

        init(client: JobFarmClient, id: String, lastEventID: String?, reconnectAttempts: Int) {
            self.client = client
            self.id = id
            self.lastEventID = lastEventID
            self.reconnectAttempts = reconnectAttempts
        }

        public mutating func next() async throws -> JobEvent? {
            while !finished {
                if let event = parser.nextEvent() {
                    guard event.name == "progress" || event.name == "final", let data = event.data else { continue }
                    if let eventID = event.id { lastEventID = eventID }
                    let job = try Job(try JSONValue(parsing: data))
                    if event.name == "final" { finished = true }
                    return JobEvent(id: event.id, name: event.name, job: job)
                }
                if body == nil {
                    try await connect()
                    continue
                }
                do {
                    if let chunk = try await body?.next() {
                        parser.append(chunk)
                        failures = 0
                    } else {
                        body = nil  // the stream ended before the final event: reconnect where it stopped
                        parser = ServerSentEventParser()
                    }
                } catch {
                    if Task.isCancelled { throw CancellationError() }
                    body = nil
                    parser = ServerSentEventParser()
                    try await backOff(after: error)
                }
            }
            return nil
        }

        /// Opens the next stream; 204 (the final event was seen) ends the sequence, a problem is thrown.
        mutating func connect() async throws {
            var headers = [("Accept", "text/event-stream")]
            if let lastEventID { headers.append(("Last-Event-ID", lastEventID)) }
            let request = client.makeRequest(.GET, "/v1/jobs/\(JobFarmClient.pathSegment(id))/events", headers: headers)
            let response: HTTPClientResponse
            do {
                response = try await client.http.execute(request, timeout: .nanoseconds(Int64(client.requestTimeout.clientSeconds * 1e9)))
            } catch {
                if Task.isCancelled { throw CancellationError() }
                try await backOff(after: error)
                return
            }
            let status = Int(response.status.code)
            if status == 204 {
                finished = true
                return
            }
            guard status == 200 else {
                let text = String(buffer: (try? await response.body.collect(upTo: 1 << 20)) ?? ByteBuffer())
                throw JobFarmClient.failure(status: status, headers: response.headers, text: text)
            }
            body = response.body.makeAsyncIterator()
        }

        mutating func backOff(after error: any Error) async throws {
            failures += 1
            guard failures <= reconnectAttempts else {
                throw JobFarmClientError.transport("GET /v1/jobs/\(id)/events: \(error) (\(failures) attempts)")
            }
            try await Task.sleep(for: .milliseconds(100 * (1 << Swift.min(failures, 5))))
        }
    }
}

/// The `text/event-stream` format (WHATWG HTML, "Server-sent events"): fields per line, an event per blank line.
struct ServerSentEventParser {
    struct Event {
        var id: String?
        var name: String
        var data: String?
    }

    private var pending: [UInt8] = []
    private var id: String?
    private var name: String?
    private var data: [String] = []

    mutating func append(_ buffer: ByteBuffer) {
        pending.append(contentsOf: buffer.readableBytesView)
    }

    /// The next whole event in what was appended, if any; comments and unknown fields are skipped.
    mutating func nextEvent() -> Event? {
        while let newline = pending.firstIndex(where: { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }) {
            // A \r as the last byte may be the first half of a \r\n: wait for the next byte.
            if pending[newline] == UInt8(ascii: "\r"), newline + 1 == pending.count { return nil }
            var line = String(decoding: pending[..<newline], as: UTF8.self)
            var end = newline + 1
            if pending[newline] == UInt8(ascii: "\r"), pending[end] == UInt8(ascii: "\n") { end += 1 }
            pending.removeFirst(end)
            if line.isEmpty {
                defer { (name, data) = (nil, []) }
                if data.isEmpty && name == nil { continue }
                return Event(id: id, name: name ?? "message", data: data.isEmpty ? nil : data.joined(separator: "\n"))
            }
            if line.hasPrefix(":") { continue }
            var value = ""
            if let colon = line.firstIndex(of: ":") {
                value = String(line[line.index(after: colon)...])
                if value.hasPrefix(" ") { value.removeFirst() }
                line = String(line[..<colon])
            }
            switch line {
            case "id": id = value
            case "event": name = value
            case "data": data.append(value)
            default: break
            }
        }
        return nil
    }
}
