//+------------------------------------------------------------------+
//|                                              QuantArbBridge.mq5  |
//|  The MetaTrader 5 side of quantarb: streams ticks, executes the   |
//|  commands quantarb sends back, reports acks, fills and account.   |
//|                                                                   |
//|  Protocol: docs/mt5-protocol.md (flat JSON over HTTP, every       |
//|  request signed with HMAC-SHA256). See mql5/README.md.            |
//+------------------------------------------------------------------+
#property copyright   "quantarb"
#property version     "1.00"
#property description "quantarb bridge: ticks out, commands in, acks/fills/account out (signed HTTP)."

//--- inputs ---------------------------------------------------------
enum QA_FILLING_POLICY
  {
   QA_FILLING_FROM_COMMAND = 0,   // As the command says (checked against the symbol)
   QA_FILLING_AUTO         = 1,   // Best the symbol allows (FOK, then IOC, then RETURN)
   QA_FILLING_FOK          = 2,   // Always Fill or Kill
   QA_FILLING_IOC          = 3,   // Always Immediate or Cancel
   QA_FILLING_RETURN       = 4    // Always Return
  };

input string            InpBaseUrl            = "http://127.0.0.1:8787"; // quantarb listener (add it to the WebRequest allow-list)
input string            InpTerminalId         = "T1";                    // terminal id ([venues.mt5] terminals)
input string            InpSecret             = "";                      // shared secret (QUANTARB_MT5_SECRET_<ID>)
input string            InpSymbols            = "XAUUSD,BTCUSD,ETHUSD";  // symbols to stream, comma-separated
input ulong             InpMagic              = 7701;                    // magic number ([venues.mt5] magic)
input int               InpTimerMs            = 100;                     // timer period, ms
input ulong             InpMaxDeviation       = 20;                      // max deviation, points (caps the command's)
input QA_FILLING_POLICY InpFilling            = QA_FILLING_FROM_COMMAND; // filling policy
input int               InpHttpTimeoutMs      = 3000;                    // WebRequest timeout, ms
input int               InpAccountEverySec    = 2;                       // account report period, s
input int               InpHistoryDays        = 7;                       // how far back to look for our deals
input int               InpResyncMinutes      = 10;                      // re-report fills of this many minutes at start
input bool              InpTickTimeToUtc      = true;                    // convert trade-server times to UTC
input bool              InpReportAllPositions = true;                    // account: every position (quantarb keeps its magic's)

//--- constants ------------------------------------------------------
#define QA_COMMENT_MAX     31      // characters of an order comment the trade server keeps
#define QA_HANDLED_MAX     1024    // commands remembered in this session
#define QA_REPORTED_MAX    2048    // deals reported in this session
#define QA_OUTBOX_MAX      2000    // undelivered acks/fills kept for retry
#define QA_AWAIT_MS        60000   // how long to wait for the deals of an accepted command

// Signing self-test vectors: docs/mt5-protocol.md and tests/fixtures/mt5_signing_vectors.json
// (vector 1: GET with a query string and an empty body; vector 2: POST tick).
#define QA_TV1_SECRET      "quantarb-test-secret-T1"
#define QA_TV1_TIMESTAMP   "1732150000123"
#define QA_TV1_METHOD      "GET"
#define QA_TV1_PATH        "/mt5/commands?wait_ms=0"
#define QA_TV1_BODY        ""
#define QA_TV1_SIGNATURE   "5fe83b5dfc63ef7e8c82e9c3fc717017379ded4c835f1c79e7d73c7592f0ccc5"
#define QA_TV2_SECRET      "quantarb-test-secret-T1"
#define QA_TV2_TIMESTAMP   "1732150000200"
#define QA_TV2_METHOD      "POST"
#define QA_TV2_PATH        "/mt5/tick"
#define QA_TV2_BODY        "{\"ticks\":[{\"symbol\":\"XAUUSD\",\"bid\":2650.11,\"ask\":2650.31,\"time_msc\":1732150000123}]}"
#define QA_TV2_SIGNATURE   "49119ce2de8fa6f639e1197f385fb5f0c253c6d0e270bcfb40cb9255960eb3d2"
// RFC 4231 HMAC-SHA256 test cases 2 and 6 (short key; key longer than the 64-byte block).
#define QA_RFC2_KEY        "Jefe"
#define QA_RFC2_DATA       "what do ya want for nothing?"
#define QA_RFC2_MAC        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
#define QA_RFC6_DATA       "Test Using Larger Than Block-Size Key - Hash Key First"
#define QA_RFC6_MAC        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"

//--- state ----------------------------------------------------------
string   g_baseUrl  = "";
string   g_basePath = "";
string   g_symbols[];
double   g_lastBid[];
double   g_lastAsk[];
long     g_lastTime[];

long     g_anchorMs = 0;        // unix ms at g_anchorUs
ulong    g_anchorUs = 0;
ulong    g_nextClockCheck = 0;
long     g_lastTs = 0;          // last X-QA-Timestamp (strictly increasing)

string   g_outPath[];           // outbox: reports not delivered yet, oldest first
string   g_outBody[];
int      g_outFailures = 0;
ulong    g_outRetryAt  = 0;

string   g_handledId[];         // ring: command id -> ack body
string   g_handledAck[];
int      g_handledNext = 0;

ulong    g_reported[];          // ring: deal tickets reported in this session
int      g_reportedNext = 0;

string   g_awaitId[];           // accepted commands whose deals are still expected
double   g_awaitVolume[];
ulong    g_awaitUntil[];

string   g_retryId[];           // transient failures: retry after g_retryAt
ulong    g_retryAt[];
uint     g_retryCode[];

bool     g_resyncDone = false;
ulong    g_nextAccount = 0;
ulong    g_lastErrorPrint = 0;

long     g_ticksSent = 0, g_commandsSeen = 0, g_executed = 0, g_duplicates = 0;
long     g_expired = 0, g_rejected = 0, g_httpErrors = 0, g_acks = 0, g_fills = 0;

//+------------------------------------------------------------------+
//| Bytes, hashing and signing                                       |
//+------------------------------------------------------------------+
// UTF-8 bytes of s without the terminating NUL that StringToCharArray copies.
int QA_Utf8(const string s, uchar &out[])
  {
   ArrayResize(out, 0);
   int n = StringToCharArray(s, out, 0, WHOLE_ARRAY, CP_UTF8);
   if(n > 0 && out[n - 1] == 0)
      n--;
   if(n < 0)
      n = 0;
   ArrayResize(out, n);
   return n;
  }

string QA_Hex(const uchar &bytes[])
  {
   string s = "";
   int n = ArraySize(bytes);
   for(int i = 0; i < n; i++)
      s += StringFormat("%02x", bytes[i]);
   return s;
  }

bool QA_Sha256(const uchar &data[], uchar &digest[])
  {
   uchar nokey[];                      // hash methods take no key
   ArrayResize(digest, 0);
   int n = CryptEncode(CRYPT_HASH_SHA256, data, nokey, digest);
   return n == 32;
  }

// HMAC-SHA256 (RFC 2104): H((K ^ opad) || H((K ^ ipad) || message)), 64-byte block.
bool QA_HmacSha256(const uchar &key[], const uchar &message[], uchar &mac[])
  {
   uchar k[];
   if(ArraySize(key) > 64)
     {
      if(!QA_Sha256(key, k))
         return false;
     }
   else
      ArrayCopy(k, key);
   int klen = ArraySize(k);
   ArrayResize(k, 64);
   for(int i = klen; i < 64; i++)
      k[i] = 0;

   int mlen = ArraySize(message);
   uchar inner[];
   ArrayResize(inner, 64 + mlen);
   for(int i = 0; i < 64; i++)
      inner[i] = (uchar)(k[i] ^ 0x36);
   for(int i = 0; i < mlen; i++)
      inner[64 + i] = message[i];
   uchar innerHash[];
   if(!QA_Sha256(inner, innerHash))
      return false;

   uchar outer[];
   ArrayResize(outer, 64 + 32);
   for(int i = 0; i < 64; i++)
      outer[i] = (uchar)(k[i] ^ 0x5c);
   for(int i = 0; i < 32; i++)
      outer[64 + i] = innerHash[i];
   return QA_Sha256(outer, mac);
  }

// The documented signing string: timestamp \n METHOD \n path_with_query \n body.
string QA_SigningString(const string timestamp, const string method, const string path_with_query, const string body)
  {
   return timestamp + "\n" + method + "\n" + path_with_query + "\n" + body;
  }

string QA_Sign(const string secret, const string timestamp, const string method, const string path_with_query, const string body)
  {
   uchar key[], msg[], mac[];
   QA_Utf8(secret, key);
   QA_Utf8(QA_SigningString(timestamp, method, path_with_query, body), msg);
   if(!QA_HmacSha256(key, msg, mac))
      return "";
   return QA_Hex(mac);
  }

bool QA_SelfTest()
  {
   uchar key[], msg[], mac[];
   QA_Utf8(QA_RFC2_KEY, key);
   QA_Utf8(QA_RFC2_DATA, msg);
   if(!QA_HmacSha256(key, msg, mac) || QA_Hex(mac) != QA_RFC2_MAC)
     {
      Print("QuantArbBridge: HMAC-SHA256 self-test failed (RFC 4231 case 2): ", QA_Hex(mac));
      return false;
     }
   ArrayResize(key, 131);
   for(int i = 0; i < 131; i++)
      key[i] = 0xaa;
   QA_Utf8(QA_RFC6_DATA, msg);
   if(!QA_HmacSha256(key, msg, mac) || QA_Hex(mac) != QA_RFC6_MAC)
     {
      Print("QuantArbBridge: HMAC-SHA256 self-test failed (RFC 4231 case 6): ", QA_Hex(mac));
      return false;
     }
   string sig1 = QA_Sign(QA_TV1_SECRET, QA_TV1_TIMESTAMP, QA_TV1_METHOD, QA_TV1_PATH, QA_TV1_BODY);
   if(sig1 != QA_TV1_SIGNATURE)
     {
      Print("QuantArbBridge: signing self-test 1 failed: got ", sig1, " expected ", QA_TV1_SIGNATURE);
      return false;
     }
   string sig2 = QA_Sign(QA_TV2_SECRET, QA_TV2_TIMESTAMP, QA_TV2_METHOD, QA_TV2_PATH, QA_TV2_BODY);
   if(sig2 != QA_TV2_SIGNATURE)
     {
      Print("QuantArbBridge: signing self-test 2 failed: got ", sig2, " expected ", QA_TV2_SIGNATURE);
      return false;
     }
   return true;
  }

//+------------------------------------------------------------------+
//| Time                                                             |
//+------------------------------------------------------------------+
// MQL5 has no millisecond wall clock: anchor TimeGMT() at a second boundary and
// advance it with the microsecond counter.
void QA_AnchorClock()
  {
   datetime t0 = TimeGMT();
   ulong start = GetMicrosecondCount();
   while(TimeGMT() == t0 && GetMicrosecondCount() - start < 1100000)
     {
     }
   g_anchorUs = GetMicrosecondCount();
   g_anchorMs = (long)TimeGMT() * 1000;
  }

long QA_NowMs()
  {
   return g_anchorMs + (long)((GetMicrosecondCount() - g_anchorUs) / 1000);
  }

void QA_CheckClock()
  {
   ulong now = GetTickCount64();
   if(now < g_nextClockCheck)
      return;
   g_nextClockCheck = now + 60000;
   long drift = QA_NowMs() / 1000 - (long)TimeGMT();
   if(drift > 1 || drift < -1)
      QA_AnchorClock();
  }

// Trade-server time minus UTC, rounded to 15 minutes (brokers run on UTC+2/+3 and such).
long QA_ServerOffsetMs()
  {
   if(!InpTickTimeToUtc)
      return 0;
   long diff = (long)TimeTradeServer() - (long)TimeGMT();
   long quarters = (long)MathRound(diff / 900.0);
   return quarters * 900 * 1000;
  }

string QA_NextTimestamp()
  {
   long ts = QA_NowMs();
   if(ts <= g_lastTs)
      ts = g_lastTs + 1;              // a repeated signature would be refused as a replay
   g_lastTs = ts;
   return IntegerToString(ts);
  }

//+------------------------------------------------------------------+
//| JSON helpers (flat objects only; MQL5 has no JSON parser)        |
//+------------------------------------------------------------------+
string QA_JsonQuote(const string s)
  {
   string out = "\"";
   int n = StringLen(s);
   for(int i = 0; i < n; i++)
     {
      ushort c = StringGetCharacter(s, i);
      if(c == '"')
         out += "\\\"";
      else if(c == '\\')
         out += "\\\\";
      else if(c < 0x20)
         out += StringFormat("\\u%04x", c);
      else
         out += ShortToString(c);
     }
   return out + "\"";
  }

// A JSON number: DoubleToString without trailing zeros (never "1." nor "-0").
string QA_Num(const double value, const int digits)
  {
   string s = DoubleToString(value, digits);
   if(StringFind(s, ".") >= 0)
     {
      int n = StringLen(s);
      while(n > 0 && StringGetCharacter(s, n - 1) == '0')
         n--;
      if(n > 0 && StringGetCharacter(s, n - 1) == '.')
         n--;
      s = StringSubstr(s, 0, n);
     }
   if(s == "-0")
      s = "0";
   return s;
  }

int QA_SkipWs(const string s, int i)
  {
   int n = StringLen(s);
   while(i < n)
     {
      ushort c = StringGetCharacter(s, i);
      if(c != ' ' && c != '\t' && c != '\r' && c != '\n')
         break;
      i++;
     }
   return i;
  }

// Reads the JSON string starting at the quote at i; returns the index after its closing quote, or -1.
int QA_ReadString(const string s, int i, string &out)
  {
   out = "";
   int n = StringLen(s);
   if(i >= n || StringGetCharacter(s, i) != '"')
      return -1;
   i++;
   while(i < n)
     {
      ushort c = StringGetCharacter(s, i);
      if(c == '"')
         return i + 1;
      if(c == '\\')
        {
         if(i + 1 >= n)
            return -1;
         ushort e = StringGetCharacter(s, i + 1);
         if(e == 'n')
            out += "\n";
         else if(e == 't')
            out += "\t";
         else if(e == 'r')
            out += "\r";
         else if(e == 'b')
            out += ShortToString(8);
         else if(e == 'f')
            out += ShortToString(12);
         else if(e == 'u')
           {
            if(i + 5 >= n)
               return -1;
            string hex = StringSubstr(s, i + 2, 4);
            ushort code = 0;
            for(int k = 0; k < 4; k++)
              {
               ushort h = StringGetCharacter(hex, k);
               int v = -1;
               if(h >= '0' && h <= '9')
                  v = h - '0';
               else if(h >= 'a' && h <= 'f')
                  v = h - 'a' + 10;
               else if(h >= 'A' && h <= 'F')
                  v = h - 'A' + 10;
               if(v < 0)
                  return -1;
               code = (ushort)(code * 16 + v);
              }
            out += ShortToString(code);
            i += 6;
            continue;
           }
         else
            out += ShortToString(e);   // \" \\ \/
         i += 2;
         continue;
        }
      out += ShortToString(c);
      i++;
     }
   return -1;
  }

// The raw value of `key` in a flat JSON object (strings unescaped). false if absent or malformed.
bool QA_JsonRaw(const string obj, const string key, string &value, bool &is_string)
  {
   int n = StringLen(obj);
   int i = QA_SkipWs(obj, 0);
   if(i >= n || StringGetCharacter(obj, i) != '{')
      return false;
   i++;
   while(i < n)
     {
      i = QA_SkipWs(obj, i);
      if(i >= n)
         return false;
      ushort c = StringGetCharacter(obj, i);
      if(c == '}')
         return false;
      if(c == ',')
        {
         i++;
         continue;
        }
      string k;
      i = QA_ReadString(obj, i, k);
      if(i < 0)
         return false;
      i = QA_SkipWs(obj, i);
      if(i >= n || StringGetCharacter(obj, i) != ':')
         return false;
      i = QA_SkipWs(obj, i + 1);
      if(i >= n)
         return false;
      string v;
      bool str = (StringGetCharacter(obj, i) == '"');
      if(str)
        {
         i = QA_ReadString(obj, i, v);
         if(i < 0)
            return false;
        }
      else
        {
         int j = i;
         while(j < n)
           {
            ushort d = StringGetCharacter(obj, j);
            if(d == ',' || d == '}' || d == ' ' || d == '\t' || d == '\r' || d == '\n')
               break;
            j++;
           }
         v = StringSubstr(obj, i, j - i);
         i = j;
        }
      if(k == key)
        {
         value = v;
         is_string = str;
         return true;
        }
     }
   return false;
  }

string QA_JsonString(const string obj, const string key, const string fallback)
  {
   string v;
   bool str;
   if(!QA_JsonRaw(obj, key, v, str) || !str)
      return fallback;
   return v;
  }

double QA_JsonDouble(const string obj, const string key, const double fallback)
  {
   string v;
   bool str;
   if(!QA_JsonRaw(obj, key, v, str) || v == "null" || v == "")
      return fallback;
   return StringToDouble(v);
  }

long QA_JsonLong(const string obj, const string key, const long fallback)
  {
   string v;
   bool str;
   if(!QA_JsonRaw(obj, key, v, str) || v == "null" || v == "")
      return fallback;
   return StringToInteger(v);
  }

// The objects of the array `key` of the top-level object, e.g. {"commands":[{...},{...}]}.
int QA_JsonArrayObjects(const string json, const string key, string &objects[])
  {
   ArrayResize(objects, 0);
   int at = StringFind(json, QA_JsonQuote(key));
   if(at < 0)
      return -1;
   int i = StringFind(json, "[", at);
   if(i < 0)
      return -1;
   int n = StringLen(json);
   int depth = 0, start = -1;
   bool in_string = false, escaped = false;
   for(i = i + 1; i < n; i++)
     {
      ushort c = StringGetCharacter(json, i);
      if(in_string)
        {
         if(escaped)
            escaped = false;
         else if(c == '\\')
            escaped = true;
         else if(c == '"')
            in_string = false;
         continue;
        }
      if(c == '"')
         in_string = true;
      else if(c == '{')
        {
         if(depth == 0)
            start = i;
         depth++;
        }
      else if(c == '}')
        {
         depth--;
         if(depth == 0 && start >= 0)
           {
            int m = ArraySize(objects);
            ArrayResize(objects, m + 1);
            objects[m] = StringSubstr(json, start, i - start + 1);
            start = -1;
           }
        }
      else if(c == ']' && depth == 0)
         break;
     }
   return ArraySize(objects);
  }

//+------------------------------------------------------------------+
//| HTTP                                                             |
//+------------------------------------------------------------------+
string QA_PathPrefix(const string url)
  {
   int scheme = StringFind(url, "://");
   int from = (scheme >= 0) ? scheme + 3 : 0;
   int slash = StringFind(url, "/", from);
   if(slash < 0)
      return "";
   return StringSubstr(url, slash);
  }

void QA_PrintThrottled(const string text)
  {
   ulong now = GetTickCount64();
   if(now - g_lastErrorPrint < 10000 && g_lastErrorPrint != 0)
      return;
   g_lastErrorPrint = now;
   Print("QuantArbBridge: ", text);
  }

// One signed request. Returns the HTTP status, or -1 when WebRequest failed (no response).
int QA_Http(const string method, const string path_with_query, const string body, string &response)
  {
   response = "";
   string wire_path = g_basePath + path_with_query;
   string ts = QA_NextTimestamp();
   string signature = QA_Sign(InpSecret, ts, method, wire_path, body);
   string headers = "X-QA-Terminal: " + InpTerminalId
                    + "\r\nX-QA-Timestamp: " + ts
                    + "\r\nX-QA-Signature: " + signature;
   if(method == "POST")
      headers += "\r\nContent-Type: application/json";
   headers += "\r\n";

   uchar ubody[];
   int n = QA_Utf8(body, ubody);        // no trailing NUL on the wire
   char data[];
   ArrayResize(data, n);
   for(int i = 0; i < n; i++)
      data[i] = (char)ubody[i];
   char result[];
   string result_headers;
   ResetLastError();
   int status = WebRequest(method, g_baseUrl + path_with_query, headers, InpHttpTimeoutMs, data, result, result_headers);
   if(status == -1)
     {
      int err = GetLastError();
      g_httpErrors++;
      QA_PrintThrottled(StringFormat("WebRequest %s %s failed, error %d%s", method, path_with_query, err,
                                     (err == 4014 || err == 5203)
                                     ? " (is the URL in Tools > Options > Expert Advisors > Allow WebRequest?)" : ""));
      return -1;
     }
   int m = ArraySize(result);
   uchar ures[];
   ArrayResize(ures, m);
   for(int i = 0; i < m; i++)
      ures[i] = (uchar)result[i];
   if(m > 0)
      response = CharArrayToString(ures, 0, m, CP_UTF8);
   if(status < 200 || status >= 300)
     {
      g_httpErrors++;
      QA_PrintThrottled(StringFormat("%s %s -> HTTP %d %s", method, path_with_query, status, StringSubstr(response, 0, 300)));
     }
   return status;
  }

//+------------------------------------------------------------------+
//| Reports: acks and fills, delivered in order, retried on failure  |
//+------------------------------------------------------------------+
void QA_OutboxPopFront()
  {
   int n = ArraySize(g_outPath);
   if(n == 0)
      return;
   for(int i = 1; i < n; i++)
     {
      g_outPath[i - 1] = g_outPath[i];
      g_outBody[i - 1] = g_outBody[i];
     }
   ArrayResize(g_outPath, n - 1);
   ArrayResize(g_outBody, n - 1);
  }

// A failed report worth sending again (same body, fresh signature): no answer, 401 (clock or
// replay; the body was never looked at), 408, 429 or 5xx. Any other 4xx would fail again.
bool QA_RetryableStatus(const int status)
  {
   return status == -1 || status == 401 || status == 408 || status == 429 || status >= 500;
  }

// Sends queued reports oldest first; stops at the first retryable failure, keeping that
// report, with the same body, for the next timer event.
void QA_FlushOutbox(const bool force)
  {
   if(ArraySize(g_outPath) == 0)
      return;
   if(!force && GetTickCount64() < g_outRetryAt)
      return;
   while(ArraySize(g_outPath) > 0)
     {
      string response;
      int status = QA_Http("POST", g_outPath[0], g_outBody[0], response);
      if(QA_RetryableStatus(status))
        {
         g_outFailures++;
         int shift = MathMin(g_outFailures, 10);
         ulong delay = (ulong)MathMin(2000.0, InpTimerMs * MathPow(2, shift));
         g_outRetryAt = GetTickCount64() + delay;
         return;
        }
      g_outFailures = 0;
      if(status >= 200 && status < 300)
        {
         if(g_outPath[0] == "/mt5/ack")
            g_acks++;
         else
            g_fills++;
        }
      // 404 (unknown command) or 422 will not change on retry; a command whose ack did not
      // land is delivered again, and reported again then.
      QA_OutboxPopFront();
     }
  }

void QA_Report(const string path, const string body)
  {
   int n = ArraySize(g_outPath);
   if(n >= QA_OUTBOX_MAX)
     {
      Print("QuantArbBridge: report outbox full, dropping ", g_outPath[0], " ", g_outBody[0]);
      QA_OutboxPopFront();
      n = ArraySize(g_outPath);
     }
   ArrayResize(g_outPath, n + 1);
   ArrayResize(g_outBody, n + 1);
   g_outPath[n] = path;
   g_outBody[n] = body;
   QA_FlushOutbox(true);
  }

int QA_HandledFind(const string id)
  {
   int n = ArraySize(g_handledId);
   for(int i = 0; i < n; i++)
      if(g_handledId[i] == id)
         return i;
   return -1;
  }

void QA_Ack(const string id, const string status, const uint retcode, const string reason)
  {
   string body = "{\"command_id\":" + QA_JsonQuote(id)
                 + ",\"status\":" + QA_JsonQuote(status)
                 + ",\"retcode\":" + IntegerToString((long)retcode)
                 + ",\"reason\":" + QA_JsonQuote(reason) + "}";
   int slot = QA_HandledFind(id);
   if(slot < 0)
     {
      if(ArraySize(g_handledId) < QA_HANDLED_MAX)
        {
         slot = ArraySize(g_handledId);
         ArrayResize(g_handledId, slot + 1);
         ArrayResize(g_handledAck, slot + 1);
        }
      else
        {
         slot = g_handledNext;
         g_handledNext = (g_handledNext + 1) % QA_HANDLED_MAX;
        }
     }
   g_handledId[slot] = id;
   g_handledAck[slot] = body;
   QA_Report("/mt5/ack", body);
  }

bool QA_WasReported(const ulong deal)
  {
   int n = ArraySize(g_reported);
   for(int i = 0; i < n; i++)
      if(g_reported[i] == deal)
         return true;
   return false;
  }

void QA_MarkReported(const ulong deal)
  {
   if(QA_WasReported(deal))
      return;
   int n = ArraySize(g_reported);
   if(n < QA_REPORTED_MAX)
     {
      ArrayResize(g_reported, n + 1);
      g_reported[n] = deal;
     }
   else
     {
      g_reported[g_reportedNext] = deal;
      g_reportedNext = (g_reportedNext + 1) % QA_REPORTED_MAX;
     }
  }

// The fill body of one deal (the deal must be in the selected history).
string QA_FillJson(const string command_id, const ulong deal)
  {
   string symbol = HistoryDealGetString(deal, DEAL_SYMBOL);
   long type = HistoryDealGetInteger(deal, DEAL_TYPE);
   int digits = (int)SymbolInfoInteger(symbol, SYMBOL_DIGITS);
   long time_msc = HistoryDealGetInteger(deal, DEAL_TIME_MSC) - QA_ServerOffsetMs();
   return "{\"command_id\":" + QA_JsonQuote(command_id)
          + ",\"deal\":" + IntegerToString((long)deal)
          + ",\"order\":" + IntegerToString(HistoryDealGetInteger(deal, DEAL_ORDER))
          + ",\"position\":" + IntegerToString(HistoryDealGetInteger(deal, DEAL_POSITION_ID))
          + ",\"symbol\":" + QA_JsonQuote(symbol)
          + ",\"side\":" + QA_JsonQuote(type == DEAL_TYPE_BUY ? "buy" : "sell")
          + ",\"volume\":" + QA_Num(HistoryDealGetDouble(deal, DEAL_VOLUME), 8)
          + ",\"price\":" + QA_Num(HistoryDealGetDouble(deal, DEAL_PRICE), digits)
          + ",\"commission\":" + QA_Num(HistoryDealGetDouble(deal, DEAL_COMMISSION), 8)
          + ",\"time_msc\":" + IntegerToString(time_msc) + "}";
  }

bool QA_SelectHistory()
  {
   datetime now = TimeCurrent();
   datetime from = now - InpHistoryDays * 86400;
   return HistorySelect(from, now + 86400);
  }

// Our deals whose comment carries the command id: how the EA knows, even after a restart,
// that a command was already executed. Returns their total volume and count. With `report`,
// queues the fills of the deals not reported yet in this session (all of them when `force`).
double QA_ScanDeals(const string command_id, const bool report, const bool force, int &deal_count)
  {
   deal_count = 0;
   double total = 0.0;
   if(!QA_SelectHistory())
      return 0.0;
   string comment = StringSubstr(command_id, 0, QA_COMMENT_MAX);
   string bodies[];
   int deals = HistoryDealsTotal();
   for(int i = 0; i < deals; i++)
     {
      ulong deal = HistoryDealGetTicket(i);
      if(deal == 0)
         continue;
      if(HistoryDealGetInteger(deal, DEAL_MAGIC) != (long)InpMagic)
         continue;
      if(HistoryDealGetString(deal, DEAL_COMMENT) != comment)
         continue;
      deal_count++;
      total += HistoryDealGetDouble(deal, DEAL_VOLUME);
      if(report && (force || !QA_WasReported(deal)))
        {
         int m = ArraySize(bodies);
         ArrayResize(bodies, m + 1);
         bodies[m] = QA_FillJson(command_id, deal);
         QA_MarkReported(deal);
        }
     }
   for(int i = 0; i < ArraySize(bodies); i++)
      QA_Report("/mt5/fill", bodies[i]);
   return total;
  }

double QA_ReportFillsFor(const string command_id, const bool force, int &deal_count)
  {
   return QA_ScanDeals(command_id, true, force, deal_count);
  }

// At start: report again the fills of our recent deals (fills are idempotent), so that a
// fill lost between an ack and a crash or restart reaches quantarb.
void QA_ResyncFills()
  {
   if(InpResyncMinutes <= 0)
      return;
   datetime now = TimeCurrent();
   datetime from = now - InpResyncMinutes * 60;
   if(!HistorySelect(from, now + 86400))
      return;
   string bodies[];
   int deals = HistoryDealsTotal();
   for(int i = 0; i < deals; i++)
     {
      ulong deal = HistoryDealGetTicket(i);
      if(deal == 0 || HistoryDealGetInteger(deal, DEAL_MAGIC) != (long)InpMagic)
         continue;
      string comment = HistoryDealGetString(deal, DEAL_COMMENT);
      if(comment == "")
         continue;
      int m = ArraySize(bodies);
      ArrayResize(bodies, m + 1);
      bodies[m] = QA_FillJson(comment, deal);
      QA_MarkReported(deal);
     }
   for(int i = 0; i < ArraySize(bodies); i++)
      QA_Report("/mt5/fill", bodies[i]);
  }

void QA_Await(const string id, const double volume)
  {
   int n = ArraySize(g_awaitId);
   ArrayResize(g_awaitId, n + 1);
   ArrayResize(g_awaitVolume, n + 1);
   ArrayResize(g_awaitUntil, n + 1);
   g_awaitId[n] = id;
   g_awaitVolume[n] = volume;
   g_awaitUntil[n] = GetTickCount64() + QA_AWAIT_MS;
  }

// Deals can reach the history a moment after OrderSend returns: look again each timer event.
void QA_ProcessAwaiting()
  {
   int i = 0;
   while(i < ArraySize(g_awaitId))
     {
      int count = 0;
      double filled = QA_ReportFillsFor(g_awaitId[i], false, count);
      if(filled >= g_awaitVolume[i] - 1e-9 || GetTickCount64() > g_awaitUntil[i])
        {
         int n = ArraySize(g_awaitId);
         for(int k = i + 1; k < n; k++)
           {
            g_awaitId[k - 1] = g_awaitId[k];
            g_awaitVolume[k - 1] = g_awaitVolume[k];
            g_awaitUntil[k - 1] = g_awaitUntil[k];
           }
         ArrayResize(g_awaitId, n - 1);
         ArrayResize(g_awaitVolume, n - 1);
         ArrayResize(g_awaitUntil, n - 1);
         continue;
        }
      i++;
     }
  }

//+------------------------------------------------------------------+
//| Transient failures: retried when the command is delivered again  |
//+------------------------------------------------------------------+
int QA_RetryFind(const string id)
  {
   for(int i = 0; i < ArraySize(g_retryId); i++)
      if(g_retryId[i] == id)
         return i;
   return -1;
  }

void QA_RetryForget(const string id)
  {
   int at = QA_RetryFind(id);
   if(at < 0)
      return;
   int n = ArraySize(g_retryId);
   for(int k = at + 1; k < n; k++)
     {
      g_retryId[k - 1] = g_retryId[k];
      g_retryAt[k - 1] = g_retryAt[k];
      g_retryCode[k - 1] = g_retryCode[k];
     }
   ArrayResize(g_retryId, n - 1);
   ArrayResize(g_retryAt, n - 1);
   ArrayResize(g_retryCode, n - 1);
  }

void QA_RetryLater(const string id, const uint retcode)
  {
   int at = QA_RetryFind(id);
   if(at < 0)
     {
      at = ArraySize(g_retryId);
      ArrayResize(g_retryId, at + 1);
      ArrayResize(g_retryAt, at + 1);
      ArrayResize(g_retryCode, at + 1);
      g_retryId[at] = id;
     }
   g_retryAt[at] = GetTickCount64() + (ulong)MathMax(200, InpTimerMs * 4);
   g_retryCode[at] = retcode;
  }

bool QA_IsTransient(const uint retcode)
  {
   return retcode == TRADE_RETCODE_CONNECTION
          || retcode == TRADE_RETCODE_TOO_MANY_REQUESTS
          || retcode == TRADE_RETCODE_TIMEOUT;
  }

string QA_RetcodeName(const uint rc)
  {
   switch(rc)
     {
      case TRADE_RETCODE_REQUOTE:            return "REQUOTE";
      case TRADE_RETCODE_REJECT:             return "REJECT";
      case TRADE_RETCODE_CANCEL:             return "CANCEL";
      case TRADE_RETCODE_PLACED:             return "PLACED";
      case TRADE_RETCODE_DONE:               return "DONE";
      case TRADE_RETCODE_DONE_PARTIAL:       return "DONE_PARTIAL";
      case TRADE_RETCODE_ERROR:              return "ERROR";
      case TRADE_RETCODE_TIMEOUT:            return "TIMEOUT";
      case TRADE_RETCODE_INVALID:            return "INVALID";
      case TRADE_RETCODE_INVALID_VOLUME:     return "INVALID_VOLUME";
      case TRADE_RETCODE_INVALID_PRICE:      return "INVALID_PRICE";
      case TRADE_RETCODE_INVALID_STOPS:      return "INVALID_STOPS";
      case TRADE_RETCODE_TRADE_DISABLED:     return "TRADE_DISABLED";
      case TRADE_RETCODE_MARKET_CLOSED:      return "MARKET_CLOSED";
      case TRADE_RETCODE_NO_MONEY:           return "NO_MONEY";
      case TRADE_RETCODE_PRICE_CHANGED:      return "PRICE_CHANGED";
      case TRADE_RETCODE_PRICE_OFF:          return "PRICE_OFF";
      case TRADE_RETCODE_TOO_MANY_REQUESTS:  return "TOO_MANY_REQUESTS";
      case TRADE_RETCODE_FROZEN:             return "FROZEN";
      case TRADE_RETCODE_INVALID_FILL:       return "INVALID_FILL";
      case TRADE_RETCODE_CONNECTION:         return "CONNECTION";
      case TRADE_RETCODE_POSITION_CLOSED:    return "POSITION_CLOSED";
      case TRADE_RETCODE_INVALID_CLOSE_VOLUME: return "INVALID_CLOSE_VOLUME";
     }
   return "RETCODE_" + IntegerToString((long)rc);
  }

//+------------------------------------------------------------------+
//| Commands                                                         |
//+------------------------------------------------------------------+
int QA_SymbolIndex(const string symbol)
  {
   for(int i = 0; i < ArraySize(g_symbols); i++)
      if(g_symbols[i] == symbol)
         return i;
   return -1;
  }

// The filling mode for this order, or false (with the reason) when the symbol does not allow it.
bool QA_ResolveFilling(const string symbol, const string wanted, ENUM_ORDER_TYPE_FILLING &filling, string &why)
  {
   long modes = SymbolInfoInteger(symbol, SYMBOL_FILLING_MODE);
   bool fok = (modes & SYMBOL_FILLING_FOK) == SYMBOL_FILLING_FOK;
   bool ioc = (modes & SYMBOL_FILLING_IOC) == SYMBOL_FILLING_IOC;
   string mode = wanted;
   if(InpFilling == QA_FILLING_FOK)
      mode = "FOK";
   else if(InpFilling == QA_FILLING_IOC)
      mode = "IOC";
   else if(InpFilling == QA_FILLING_RETURN)
      mode = "RETURN";
   else if(InpFilling == QA_FILLING_AUTO || mode == "")
      mode = fok ? "FOK" : (ioc ? "IOC" : "RETURN");
   if(mode == "FOK")
     {
      filling = ORDER_FILLING_FOK;
      if(!fok)
        {
         why = "symbol does not allow FOK filling";
         return false;
        }
     }
   else if(mode == "IOC")
     {
      filling = ORDER_FILLING_IOC;
      if(!ioc)
        {
         why = "symbol does not allow IOC filling";
         return false;
        }
     }
   else if(mode == "RETURN")
      filling = ORDER_FILLING_RETURN;
   else
     {
      why = "unknown filling " + mode;
      return false;
     }
   return true;
  }

void QA_HandleCommand(const string obj)
  {
   g_commandsSeen++;
   string id = QA_JsonString(obj, "id", "");
   if(id == "")
     {
      Print("QuantArbBridge: command without an id ignored: ", StringSubstr(obj, 0, 200));
      return;
     }
   // 1. Already handled in this session: report again, never execute again.
   int handled = QA_HandledFind(id);
   if(handled >= 0)
     {
      g_duplicates++;
      QA_Report("/mt5/ack", g_handledAck[handled]);
      int n0 = 0;
      QA_ReportFillsFor(id, true, n0);
      return;
     }
   double volume = QA_JsonDouble(obj, "volume", 0.0);
   // 2. Executed before a restart: our deal history carries the command id in the comment.
   int found = 0;
   double filled = QA_ScanDeals(id, false, false, found);
   if(found > 0)
     {
      g_duplicates++;
      uint rc_done = (filled < volume - 1e-9) ? TRADE_RETCODE_DONE_PARTIAL : TRADE_RETCODE_DONE;
      QA_Ack(id, "accepted", rc_done, "");      // the ack first, then every deal again
      QA_ReportFillsFor(id, true, found);
      return;
     }
   // 3. Expired: refuse.
   long expires_msc = QA_JsonLong(obj, "expires_msc", 0);
   int retry = QA_RetryFind(id);
   if(expires_msc > 0 && QA_NowMs() > expires_msc)
     {
      g_expired++;
      uint last = (retry >= 0) ? g_retryCode[retry] : 0;
      QA_RetryForget(id);
      QA_Ack(id, "expired", last, "expired before execution");
      return;
     }
   if(retry >= 0 && GetTickCount64() < g_retryAt[retry])
      return;   // back off after a transient failure; the command comes again

   string group_id = QA_JsonString(obj, "group_id", "");
   string kind = QA_JsonString(obj, "kind", "");
   string symbol = QA_JsonString(obj, "symbol", "");
   string side = QA_JsonString(obj, "side", "");
   double price = QA_JsonDouble(obj, "price", 0.0);
   long deviation_points = QA_JsonLong(obj, "deviation_points", 0);
   string filling_name = QA_JsonString(obj, "filling", "");
   long magic = QA_JsonLong(obj, "magic", 0);
   ulong position = (ulong)QA_JsonLong(obj, "position", 0);

   if(kind != "open" && kind != "close")
     { g_rejected++; QA_Ack(id, "rejected", TRADE_RETCODE_INVALID, "bad command: kind must be open or close"); return; }
   if(side != "buy" && side != "sell")
     { g_rejected++; QA_Ack(id, "rejected", TRADE_RETCODE_INVALID, "bad command: side must be buy or sell"); return; }
   if(QA_SymbolIndex(symbol) < 0)
     { g_rejected++; QA_Ack(id, "rejected", TRADE_RETCODE_INVALID, "symbol " + symbol + " is not in InpSymbols"); return; }
   if(magic != 0 && magic != (long)InpMagic)
     {
      g_rejected++;
      QA_Ack(id, "rejected", TRADE_RETCODE_INVALID,
             "magic " + IntegerToString(magic) + " is not the EA's " + IntegerToString((long)InpMagic));
      return;
     }
   if(kind == "close" && position == 0)
     { g_rejected++; QA_Ack(id, "rejected", TRADE_RETCODE_INVALID, "bad command: close needs a position ticket"); return; }

   ENUM_ORDER_TYPE_FILLING filling = ORDER_FILLING_IOC;
   string why = "";
   if(!QA_ResolveFilling(symbol, filling_name, filling, why))
     { g_rejected++; QA_Ack(id, "rejected", TRADE_RETCODE_INVALID_FILL, why); return; }

   if(kind == "close")
     {
      if(!PositionSelectByTicket(position))
        { g_rejected++; QA_Ack(id, "rejected", TRADE_RETCODE_POSITION_CLOSED, "position not found"); return; }
      if(PositionGetString(POSITION_SYMBOL) != symbol)
        { g_rejected++; QA_Ack(id, "rejected", TRADE_RETCODE_INVALID, "position is on another symbol"); return; }
      long ptype = PositionGetInteger(POSITION_TYPE);
      if((ptype == POSITION_TYPE_BUY && side != "sell") || (ptype == POSITION_TYPE_SELL && side != "buy"))
        { g_rejected++; QA_Ack(id, "rejected", TRADE_RETCODE_INVALID, "close must be opposite to the position"); return; }
      double open_volume = PositionGetDouble(POSITION_VOLUME);
      if(volume <= 0.0 || volume > open_volume)
         volume = open_volume;
     }
   double step = SymbolInfoDouble(symbol, SYMBOL_VOLUME_STEP);
   if(volume <= 0.0)
     { g_rejected++; QA_Ack(id, "rejected", TRADE_RETCODE_INVALID_VOLUME, "volume must be > 0"); return; }
   if(step > 0.0)
     {
      double steps = volume / step;
      if(MathAbs(steps - MathRound(steps)) > 1e-6)
        { g_rejected++; QA_Ack(id, "rejected", TRADE_RETCODE_INVALID_VOLUME, "volume is not a multiple of the lot step"); return; }
      volume = NormalizeDouble(MathRound(steps) * step, 8);
     }

   MqlTick tick;
   if(!SymbolInfoTick(symbol, tick) || tick.bid <= 0.0 || tick.ask <= 0.0)
     { g_rejected++; QA_Ack(id, "rejected", TRADE_RETCODE_PRICE_OFF, "no quote for " + symbol); return; }

   ulong deviation = InpMaxDeviation;
   if(deviation_points > 0 && (ulong)deviation_points < InpMaxDeviation)
      deviation = (ulong)deviation_points;

   MqlTradeRequest request;
   MqlTradeResult  result;
   ZeroMemory(request);
   ZeroMemory(result);
   request.action       = TRADE_ACTION_DEAL;
   request.symbol       = symbol;
   request.volume       = volume;
   request.type         = (side == "buy") ? ORDER_TYPE_BUY : ORDER_TYPE_SELL;
   request.price        = (side == "buy") ? tick.ask : tick.bid;
   request.deviation    = deviation;
   request.type_filling = filling;
   request.magic        = InpMagic;
   request.comment      = StringSubstr(id, 0, QA_COMMENT_MAX);   // how we find it again after a restart
   if(kind == "close")
      request.position  = position;

   ResetLastError();
   bool sent = OrderSend(request, result);
   g_executed++;
   uint rc = result.retcode;
   PrintFormat("QuantArbBridge: %s %s %s %s %.8g (group %s, quote price %.8g) -> %u %s deal %I64u order %I64u",
               kind, id, side, symbol, volume, group_id, price, rc, QA_RetcodeName(rc), result.deal, result.order);
   if(rc == TRADE_RETCODE_DONE || rc == TRADE_RETCODE_DONE_PARTIAL || rc == TRADE_RETCODE_PLACED)
     {
      QA_RetryForget(id);
      QA_Ack(id, "accepted", rc, "");
      int count = 0;
      double got = QA_ReportFillsFor(id, false, count);
      double expected = (result.volume > 0.0) ? result.volume : volume;
      if(got < expected - 1e-9)
         QA_Await(id, expected);
      return;
     }
   if(QA_IsTransient(rc))
     {
      QA_RetryLater(id, rc);
      return;   // not acknowledged: quantarb delivers it again and it is retried until it expires
     }
   g_rejected++;
   string reason = QA_RetcodeName(rc);
   if(result.comment != "")
      reason += ": " + result.comment;
   if(!sent && rc == 0)
      reason = "OrderSend failed, error " + IntegerToString(GetLastError());
   QA_Ack(id, "rejected", rc, reason);
  }

//+------------------------------------------------------------------+
//| Ticks, polling and the account                                   |
//+------------------------------------------------------------------+
// Builds the batch of ticks that changed since they were last sent.
int QA_ChangedTicks(string &json, int &indexes[], double &bids[], double &asks[], long &times[])
  {
   int count = 0;
   long offset = QA_ServerOffsetMs();
   json = "{\"ticks\":[";
   ArrayResize(indexes, 0);
   ArrayResize(bids, 0);
   ArrayResize(asks, 0);
   ArrayResize(times, 0);
   for(int i = 0; i < ArraySize(g_symbols); i++)
     {
      MqlTick tick;
      if(!SymbolInfoTick(g_symbols[i], tick))
         continue;
      if(tick.bid <= 0.0 || tick.ask <= 0.0 || tick.bid > tick.ask)
         continue;
      if(tick.time_msc == g_lastTime[i] && tick.bid == g_lastBid[i] && tick.ask == g_lastAsk[i])
         continue;
      int digits = (int)SymbolInfoInteger(g_symbols[i], SYMBOL_DIGITS);
      if(count > 0)
         json += ",";
      json += "{\"symbol\":" + QA_JsonQuote(g_symbols[i])
              + ",\"bid\":" + QA_Num(tick.bid, digits)
              + ",\"ask\":" + QA_Num(tick.ask, digits)
              + ",\"time_msc\":" + IntegerToString(tick.time_msc - offset) + "}";
      ArrayResize(indexes, count + 1);
      ArrayResize(bids, count + 1);
      ArrayResize(asks, count + 1);
      ArrayResize(times, count + 1);
      indexes[count] = i;
      bids[count] = tick.bid;
      asks[count] = tick.ask;
      times[count] = tick.time_msc;
      count++;
     }
   json += "]}";
   return count;
  }

void QA_PostAccount()
  {
   string positions = "";
   int count = 0;
   int total = PositionsTotal();
   for(int i = 0; i < total; i++)
     {
      ulong ticket = PositionGetTicket(i);   // also selects the position
      if(ticket == 0)
         continue;
      long magic = PositionGetInteger(POSITION_MAGIC);
      if(!InpReportAllPositions && magic != (long)InpMagic)
         continue;
      string symbol = PositionGetString(POSITION_SYMBOL);
      int digits = (int)SymbolInfoInteger(symbol, SYMBOL_DIGITS);
      string type = (PositionGetInteger(POSITION_TYPE) == POSITION_TYPE_BUY) ? "buy" : "sell";
      if(count > 0)
         positions += ",";
      positions += "{\"ticket\":" + IntegerToString((long)ticket)
                   + ",\"symbol\":" + QA_JsonQuote(symbol)
                   + ",\"type\":" + QA_JsonQuote(type)
                   + ",\"volume\":" + QA_Num(PositionGetDouble(POSITION_VOLUME), 8)
                   + ",\"price_open\":" + QA_Num(PositionGetDouble(POSITION_PRICE_OPEN), digits)
                   + ",\"magic\":" + IntegerToString(magic) + "}";
      count++;
     }
   // What `quantarb doctor` checks: the account's margin mode, and whether this EA may trade now
   // (the terminal's AutoTrading button, the EA's "Allow Algo Trading", the account's permissions).
   long mode = AccountInfoInteger(ACCOUNT_MARGIN_MODE);
   string margin = (mode == ACCOUNT_MARGIN_MODE_RETAIL_HEDGING) ? "hedging"
                   : (mode == ACCOUNT_MARGIN_MODE_EXCHANGE) ? "exchange" : "netting";
   bool allowed = TerminalInfoInteger(TERMINAL_TRADE_ALLOWED) && MQLInfoInteger(MQL_TRADE_ALLOWED)
                  && AccountInfoInteger(ACCOUNT_TRADE_ALLOWED) && AccountInfoInteger(ACCOUNT_TRADE_EXPERT);
   string body = "{\"balance\":" + QA_Num(AccountInfoDouble(ACCOUNT_BALANCE), 2)
                 + ",\"equity\":" + QA_Num(AccountInfoDouble(ACCOUNT_EQUITY), 2)
                 + ",\"margin_free\":" + QA_Num(AccountInfoDouble(ACCOUNT_MARGIN_FREE), 2)
                 + ",\"positions\":[" + positions + "]"
                 + ",\"margin_mode\":" + QA_JsonQuote(margin)
                 + ",\"trade_allowed\":" + (allowed ? "true" : "false") + "}";
   string response;
   QA_Http("POST", "/mt5/account", body, response);
  }

//+------------------------------------------------------------------+
//| Event handlers                                                   |
//+------------------------------------------------------------------+
int OnInit()
  {
   if(MQLInfoInteger(MQL_TESTER))
     {
      Print("QuantArbBridge: WebRequest does not work in the Strategy Tester; attach the EA to a live chart.");
      return INIT_FAILED;
     }
   if(InpSecret == "" || InpTerminalId == "" || InpBaseUrl == "")
     {
      Print("QuantArbBridge: InpBaseUrl, InpTerminalId and InpSecret are required.");
      return INIT_PARAMETERS_INCORRECT;
     }
   if(InpTimerMs < 10)
     {
      Print("QuantArbBridge: InpTimerMs must be >= 10.");
      return INIT_PARAMETERS_INCORRECT;
     }
   if(!QA_SelfTest())
     {
      Print("QuantArbBridge: HMAC-SHA256 signing self-test failed; refusing to start.");
      return INIT_FAILED;
     }

   g_baseUrl = InpBaseUrl;
   while(StringLen(g_baseUrl) > 0 && StringGetCharacter(g_baseUrl, StringLen(g_baseUrl) - 1) == '/')
      g_baseUrl = StringSubstr(g_baseUrl, 0, StringLen(g_baseUrl) - 1);
   g_basePath = QA_PathPrefix(g_baseUrl);

   string parts[];
   int n = StringSplit(InpSymbols, ',', parts);
   ArrayResize(g_symbols, 0);
   for(int i = 0; i < n; i++)
     {
      string s = parts[i];
      StringTrimLeft(s);
      StringTrimRight(s);
      if(s == "" || QA_SymbolIndex(s) >= 0)
         continue;
      if(!SymbolSelect(s, true))
        {
         Print("QuantArbBridge: unknown symbol ", s, " (error ", GetLastError(), ")");
         return INIT_PARAMETERS_INCORRECT;
        }
      int m = ArraySize(g_symbols);
      ArrayResize(g_symbols, m + 1);
      g_symbols[m] = s;
     }
   if(ArraySize(g_symbols) == 0)
     {
      Print("QuantArbBridge: InpSymbols names no symbol.");
      return INIT_PARAMETERS_INCORRECT;
     }
   int count = ArraySize(g_symbols);
   ArrayResize(g_lastBid, count);
   ArrayResize(g_lastAsk, count);
   ArrayResize(g_lastTime, count);
   for(int i = 0; i < count; i++)
     {
      g_lastBid[i] = 0.0;
      g_lastAsk[i] = 0.0;
      g_lastTime[i] = 0;
     }

   if(AccountInfoInteger(ACCOUNT_MARGIN_MODE) != ACCOUNT_MARGIN_MODE_RETAIL_HEDGING)
      Print("QuantArbBridge: warning: the account is not a hedging account; closes by ticket still work.");
   if(!TerminalInfoInteger(TERMINAL_TRADE_ALLOWED) || !MQLInfoInteger(MQL_TRADE_ALLOWED))
      Print("QuantArbBridge: warning: algorithmic trading is not allowed; commands will be rejected.");

   QA_AnchorClock();
   g_nextClockCheck = GetTickCount64() + 60000;
   g_resyncDone = false;
   g_nextAccount = 0;
   if(!EventSetMillisecondTimer(InpTimerMs))
     {
      Print("QuantArbBridge: EventSetMillisecondTimer failed, error ", GetLastError());
      return INIT_FAILED;
     }
   PrintFormat("QuantArbBridge: terminal %s -> %s, %d symbols, magic %I64u, timer %d ms",
               InpTerminalId, g_baseUrl, count, InpMagic, InpTimerMs);
   return INIT_SUCCEEDED;
  }

void OnDeinit(const int reason)
  {
   EventKillTimer();
   PrintFormat("QuantArbBridge: stopped (reason %d): ticks %I64d, commands %I64d, executed %I64d, duplicates %I64d, "
               + "expired %I64d, rejected %I64d, acks %I64d, fills %I64d, http errors %I64d, unsent reports %d",
               reason, g_ticksSent, g_commandsSeen, g_executed, g_duplicates, g_expired, g_rejected, g_acks, g_fills,
               g_httpErrors, ArraySize(g_outPath));
   Comment("");
  }

void OnTimer()
  {
   QA_CheckClock();
   if(!g_resyncDone)
     {
      g_resyncDone = true;
      QA_ResyncFills();
     }
   QA_FlushOutbox(false);

   // Ticks that changed ride one POST; its answer carries the pending commands. With nothing
   // to send, poll without waiting: WebRequest blocks, so the EA never long-polls.
   string json, response;
   int indexes[];
   double bids[], asks[];
   long times[];
   int changed = QA_ChangedTicks(json, indexes, bids, asks, times);
   int status = -1;
   if(changed > 0)
     {
      status = QA_Http("POST", "/mt5/tick", json, response);
      if(status >= 200 && status < 300)
        {
         for(int k = 0; k < changed; k++)
           {
            g_lastBid[indexes[k]] = bids[k];
            g_lastAsk[indexes[k]] = asks[k];
            g_lastTime[indexes[k]] = times[k];
           }
         g_ticksSent += changed;
        }
     }
   if(status < 200 || status >= 300)
      status = QA_Http("GET", "/mt5/commands?wait_ms=0", "", response);

   if(status >= 200 && status < 300)
     {
      string commands[];
      int n = QA_JsonArrayObjects(response, "commands", commands);
      for(int i = 0; i < n; i++)
         QA_HandleCommand(commands[i]);
     }

   QA_ProcessAwaiting();

   ulong now = GetTickCount64();
   if(now >= g_nextAccount)
     {
      g_nextAccount = now + (ulong)MathMax(1, InpAccountEverySec) * 1000;
      QA_PostAccount();
      Comment(StringFormat("QuantArbBridge %s -> %s\nticks %I64d  commands %I64d  executed %I64d  duplicates %I64d\n"
                           + "expired %I64d  rejected %I64d  http errors %I64d  unsent reports %d",
                           InpTerminalId, g_baseUrl, g_ticksSent, g_commandsSeen, g_executed, g_duplicates,
                           g_expired, g_rejected, g_httpErrors, ArraySize(g_outPath)));
     }
  }
//+------------------------------------------------------------------+
