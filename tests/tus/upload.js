// Uploads one file with tus-js-client (the off-the-shelf tus 1.0 client) from Node, for the
// media service's end-to-end tests. Prints one JSON line with the outcome.
//   node upload.js ENDPOINT TOKEN FILE CHUNK_BYTES [STOP_AFTER_BYTES|-] [UPLOAD_URL]
// STOP_AFTER_BYTES aborts the upload (as a dropped connection would) once that many bytes
// are acknowledged; UPLOAD_URL resumes an earlier upload (tus-js-client HEADs it first).
"use strict";
const fs = require("fs");
const path = require("path");
const tus = require("tus-js-client");

const [endpoint, token, file, chunk, stopAfter, uploadUrl] = process.argv.slice(2);
const data = fs.readFileSync(file);
let result = null;

const upload = new tus.Upload(data, {
  endpoint,
  uploadUrl: uploadUrl || null,
  chunkSize: Number(chunk),
  retryDelays: [],
  headers: { Authorization: `Bearer ${token}` },
  metadata: { filename: path.basename(file), purpose: "message" },
  removeFingerprintOnSuccess: true,
  onChunkComplete(size, accepted, total) {
    if (stopAfter && stopAfter !== "-" && accepted >= Number(stopAfter) && accepted < total) {
      upload.abort(false).then(() => {
        result = { status: "aborted", url: upload.url, accepted };
        console.log(JSON.stringify(result));
      });
    }
  },
  onSuccess() {
    console.log(JSON.stringify({ status: "done", url: upload.url, size: data.length }));
  },
  onError(err) {
    console.log(JSON.stringify({ status: "error", url: upload.url, error: String(err) }));
    process.exitCode = 1;
  },
});
upload.start();
