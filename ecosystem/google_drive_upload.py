"""Uploads a file to `upsim drive` with Google's own Drive client.

google-api-python-client's resumable upload (MediaIoBaseUpload, next_chunk)
against the emulator's Drive v3 upload path, authorised by google-auth's
OAuth2 Credentials, which fetch (and refresh) their access token from the
emulator's token endpoint with a refresh token. Prints the file resource the
drive answered with, as JSON, and exits non-zero on any error.

The client always uploads over https (it keeps the scheme of Google's own
root URL), so the emulator serves TLS and CA_FILE is its certificate
authority, trusted by httplib2 for the uploads and the token refreshes.

usage: google_drive_upload.py DRIVE_URL CREDENTIALS_JSON FILE CHUNK_BYTES CA_FILE
"""

import io
import json
import sys

import httplib2
from google.oauth2.credentials import Credentials
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient.discovery import build
from googleapiclient.http import MediaIoBaseUpload


def main() -> int:
    drive_url, credentials_path, path, chunk_bytes, ca_file = sys.argv[1:6]
    with open(credentials_path, encoding="utf-8") as f:
        info = json.load(f)
    credentials = Credentials(
        token=None,
        refresh_token=info["refresh_token"],
        token_uri=info["token_uri"],
        client_id=info["client_id"],
        client_secret=info["client_secret"],
    )
    # As googleapiclient.http.build_http does for its own Http: a 308 is
    # Drive's "Resume Incomplete", not a redirect.
    http = httplib2.Http(ca_certs=ca_file)
    http.redirect_codes = http.redirect_codes - {308}
    service = build(
        "drive",
        "v3",
        http=AuthorizedHttp(credentials, http=http),
        static_discovery=True,
        client_options={"api_endpoint": drive_url.rstrip("/") + "/"},
        cache_discovery=False,
    )
    with open(path, "rb") as f:
        media = MediaIoBaseUpload(
            io.BufferedReader(f),
            mimetype="application/octet-stream",
            chunksize=int(chunk_bytes),
            resumable=True,
        )
        request = service.files().create(
            body={"name": "ecosystem.bin"},
            media_body=media,
            fields="id,name,size,md5Checksum",
        )
        response = None
        chunks = 0
        while response is None:
            status, response = request.next_chunk(num_retries=3)
            chunks += 1
    print(json.dumps({"chunks": chunks, "file": response}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
