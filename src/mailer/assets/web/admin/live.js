// Live progress: elements with data-live="URL" are refreshed from that JSON endpoint.
"use strict";
