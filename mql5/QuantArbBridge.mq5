//+------------------------------------------------------------------+
//|                                              QuantArbBridge.mq5  |
//|  The MetaTrader 5 side of quantarb: streams ticks, executes the   |
//|  commands quantarb sends back, reports acks, fills and account.   |
//|                                                                   |
//|  Protocol: docs/mt5-protocol.md (flat JSON over HTTP, every       |
//|  request signed with HMAC-SHA256). See mql5/README.md, which also |
//|  says why each safety rule below exists.                          |
//+------------------------------------------------------------------+
#property copyright   "quantarb"
#property version     "2.00"
#property description "quantarb bridge: ticks out, commands in, acks/fills/account out (signed HTTP)."

//--- inputs ---------------------------------------------------------
enum QA_FILLING_POLICY
  {
   QA_FILLING_FROM_COMMAND = 0,   // Exactly the command's (refused when the symbol does not allow it)
   QA_FILLING_AUTO         = 1,   // The command's when allowed, else FOK, IOC, RETURN (by execution mode)
   QA_FILLING_FOK          = 2,   // Always Fill or Kill
   QA_FILLING_IOC          = 3,   // Always Immediate or Cancel
   QA_FILLING_RETURN       = 4    // Always Return (Exchange execution only)
  };

input string            InpBaseUrl            = "http://127.0.0.1:8787"; // quantarb listener (add it to the WebRequest allow-list)
input string            InpTerminalId         = "T1";                    // terminal id ([venues.mt5] terminals)
input string            InpSecret             = "";                      // shared secret (QUANTARB_MT5_SECRET_<ID>)
input string            InpSymbols            = "XAUUSD,BTCUSD,ETHUSD";  // symbols to stream, comma-separated
input ulong             InpMagic              = 7701;                    // magic number ([venues.mt5] magic)
input int               InpTimerMs            = 100;                     // timer period, ms
input long              InpMaxDeviation       = -1;                      // cap on a command's deviation, points (-1: none)
input QA_FILLING_POLICY InpFilling            = QA_FILLING_AUTO;         // filling policy
input int               InpHttpTimeoutMs      = 2000;                    // WebRequest timeout, ms (one wait per timer event)
input int               InpAccountEverySec    = 2;                       // account report period, s (also after trades)
input int               InpLookbackMinutes    = 60;                      // history looked at for a command not in the journal
input int               InpResyncMinutes      = 10;                      // re-report fills of this many minutes at start
input int               InpFollowSec          = 60;                      // follow a sent command's order and deals this long
input int               InpUnknownSettleSec   = 30;                      // an unknown outcome with no trace by then: rejected
input bool              InpTickTimeToUtc      = true;                    // convert trade-server times to UTC
input bool              InpReportAllPositions = true;                    // account: every position (quantarb keeps its magic's)

//--- constants ------------------------------------------------------
#define QA_COMMENT_MAX     31      // characters of an order comment the trade server keeps
#define QA_HANDLED_MAX     1024    // commands remembered in this session
#define QA_REPORTED_MAX    2048    // deals reported in this session
#define QA_OUTBOX_MAX      2000    // undelivered acks/fills kept for retry
#define QA_DIR             "QuantArb\\"   // in the common folder (FILE_COMMON): journal and lock
#define QA_JOURNAL_KEEP_MS 172800000      // journal entries older than two days are dropped ...
#define QA_JOURNAL_COMPACT 5000           // ... when the journal has more lines than this at start

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

//--- the journal ----------------------------------------------------
// One entry per command sent to the trade server (or about to be). Its line is written and
// flushed to QuantArb\<terminal>.journal in the common folder BEFORE OrderSend, so a command
// id in the journal is never sent again, whatever the broker does to comments. state:
//   sent     written before OrderSend (no outcome yet: after a crash it reads as unknown)
//   done     the server took the order (`order` known): its deals are reported
//   unknown  TIMEOUT: the order may still execute; looked for, never sent again
//   retry    nothing executed (CONNECTION, TOO_MANY_REQUESTS): may be sent again
//   rejected final: nothing executed
// Line: 1 \t id \t state \t send_ms \t symbol \t side \t volume \t order \t retcode \t reason
struct QA_Entry
  {
   string   id;
   string   state;
   long     send_ms;        // EA clock, unix ms
   string   symbol;
   string   side;
   double   volume;
   ulong    order;
   uint     retcode;
   string   reason;
   bool     following;      // in memory: its order or deals are still looked at
   ulong    follow_until;   // GetTickCount64
   ulong    settle_at;      // an unknown outcome with no trace by then is a rejection
   bool     cancel_sent;    // TRADE_ACTION_REMOVE sent for a resting remainder
  };

//--- state ----------------------------------------------------------
string   g_baseUrl  = "";
string   g_basePath = "";
string   g_symbols[];
double   g_lastBid[];
double   g_lastAsk[];
long     g_lastTime[];

long     g_anchorMs = 0;        // unix ms at g_anchorUs
ulong    g_anchorUs = 0;
datetime g_lastGmt = 0;         // TimeGMT() at the previous timer event ...
ulong    g_lastGmtUs = 0;       // ... and when it was read
long     g_lastTs = 0;          // last X-QA-Timestamp (strictly increasing)

QA_Entry g_journal[];
int      g_journalFile = INVALID_HANDLE;
int      g_lockFile = INVALID_HANDLE;
string   g_instance = "";       // X-QA-Instance, kept in the lock file
bool     g_standby = false;     // the listener says another instance holds this terminal (409)

bool     g_httpBlocked = false; // a request of this timer event got no answer: no more HTTP now
ulong    g_httpDownUntil = 0;   // no request before this (backing off a listener that does not answer)
int      g_httpDownFailures = 0;

string   g_outPath[];           // outbox: reports not delivered yet, oldest first
string   g_outBody[];
int      g_outFailures = 0;
ulong    g_outRetryAt  = 0;

string   g_handledId[];         // ring: command id -> ack body
string   g_handledAck[];
int      g_handledNext = 0;

ulong    g_reported[];          // ring: deal tickets reported in this session
int      g_reportedNext = 0;

string   g_retryId[];           // transient failures: retry after g_retryAt
ulong    g_retryAt[];
uint     g_retryCode[];

bool     g_resyncDone = false;
ulong    g_nextAccount = 0;     // 0: report the account at the end of this timer event
ulong    g_lastErrorPrint = 0;

long     g_ticksSent = 0, g_commandsSeen = 0, g_executed = 0, g_duplicates = 0;
long     g_expired = 0, g_rejected = 0, g_httpErrors = 0, g_acks = 0, g_fills = 0;
long     g_unknown = 0, g_removed = 0, g_priceRefusals = 0, g_leaseRefusals = 0;

//--- prototypes (these call each other) ------------------------------
bool   QA_Resolve(const int j);
void   QA_Conclude(const int j, const bool force);
void   QA_FollowOne(const int j);

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
// MQL5 has no millisecond wall clock: anchor TimeGMT() at a second boundary and advance it
// with the microsecond counter. OnInit waits for one boundary (up to a second, once); after
// that OnTimer never waits: it sees a boundary pass between two timer events and re-anchors
// there (within half a timer period) when the clock has drifted by more than a second.
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
   datetime gmt = TimeGMT();
   ulong us = GetMicrosecondCount();
   // Exactly one boundary since the previous event, less than a second ago: the second began
   // in between (a longer gap, e.g. a blocked WebRequest, says too little).
   if(g_lastGmt != 0 && gmt == g_lastGmt + 1 && us - g_lastGmtUs < 1000000)
     {
      ulong boundary = g_lastGmtUs + (us - g_lastGmtUs) / 2;
      long estimate = (long)gmt * 1000 + (long)((us - boundary) / 1000);
      long drift = estimate - QA_NowMs();
      if(drift > 1000 || drift < -1000)
        {
         g_anchorMs = (long)gmt * 1000;
         g_anchorUs = boundary;
        }
     }
   g_lastGmt = gmt;
   g_lastGmtUs = us;
  }

// Trade-server time minus UTC, rounded to 15 minutes (brokers run on UTC+2/+3 and such).
long QA_ServerMinusUtcMs()
  {
   long diff = (long)TimeTradeServer() - (long)TimeGMT();
   long quarters = (long)MathRound(diff / 900.0);
   return quarters * 900 * 1000;
  }

// What to subtract from trade-server times (ticks, deals) to report them in UTC.
long QA_ServerOffsetMs()
  {
   return InpTickTimeToUtc ? QA_ServerMinusUtcMs() : 0;
  }

// The trade-server time of an EA-clock instant (for HistorySelect windows).
datetime QA_ServerTime(const long unix_ms)
  {
   return (datetime)((unix_ms + QA_ServerMinusUtcMs()) / 1000);
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

// One signed request. Returns the HTTP status, -1 when WebRequest failed (no answer), or -2
// when it was not tried: WebRequest blocks the EA for up to InpHttpTimeoutMs, so after one
// request without an answer no other is tried in the same timer event, and the next ones
// back off (up to 2 s). Reports are kept for later either way.
int QA_Http(const string method, const string path_with_query, const string body, string &response)
  {
   response = "";
   if(g_httpBlocked || GetTickCount64() < g_httpDownUntil)
      return -2;
   string wire_path = g_basePath + path_with_query;
   string ts = QA_NextTimestamp();
   string signature = QA_Sign(InpSecret, ts, method, wire_path, body);
   string headers = "X-QA-Terminal: " + InpTerminalId
                    + "\r\nX-QA-Timestamp: " + ts
                    + "\r\nX-QA-Signature: " + signature
                    + "\r\nX-QA-Instance: " + g_instance;
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
      g_httpBlocked = true;
      g_httpDownFailures++;
      g_httpDownUntil = GetTickCount64() + (ulong)MathMin(2000.0, InpTimerMs * MathPow(2, MathMin(g_httpDownFailures, 10)));
      QA_PrintThrottled(StringFormat("WebRequest %s %s failed, error %d%s", method, path_with_query, err,
                                     (err == 4014 || err == 5203)
                                     ? " (is the URL in Tools > Options > Expert Advisors > Allow WebRequest?)" : ""));
      return -1;
     }
   g_httpDownFailures = 0;
   int m = ArraySize(result);
   uchar ures[];
   ArrayResize(ures, m);
   for(int i = 0; i < m; i++)
      ures[i] = (uchar)result[i];
   if(m > 0)
      response = CharArrayToString(ures, 0, m, CP_UTF8);
   bool leased = (StringFind(path_with_query, "/mt5/tick") == 0 || StringFind(path_with_query, "/mt5/commands") == 0
                  || StringFind(path_with_query, "/mt5/account") == 0);
   if(status == 409 && leased)
     {
      // Another instance with this terminal id holds the terminal at the listener: stand by
      // (no commands come) until its lease lapses.
      g_leaseRefusals++;
      if(!g_standby)
         Print("QuantArbBridge: another EA instance holds terminal ", InpTerminalId, " at the listener; standing by: ",
               StringSubstr(response, 0, 300));
      g_standby = true;
     }
   else if(status >= 200 && status < 300 && leased && StringFind(path_with_query, "/mt5/account") != 0)
     {
      if(g_standby)
         Print("QuantArbBridge: this instance (", g_instance, ") now holds terminal ", InpTerminalId);
      g_standby = false;
     }
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

// A failed report worth sending again (same body, fresh signature): no answer or not tried
// (-1, -2), 401 (clock or replay; the body was never looked at), 408, 409, 429 or 5xx. Any
// other 4xx would fail again.
bool QA_RetryableStatus(const int status)
  {
   return status < 0 || status == 401 || status == 408 || status == 409 || status == 429 || status >= 500;
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

// Nothing executed and a retry may succeed. TIMEOUT is not one: the order may still execute.
bool QA_IsTransient(const uint retcode)
  {
   return retcode == TRADE_RETCODE_CONNECTION || retcode == TRADE_RETCODE_TOO_MANY_REQUESTS;
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
//| The journal and the instance lock (common folder)                |
//+------------------------------------------------------------------+
int QA_JournalFind(const string id)
  {
   for(int j = ArraySize(g_journal) - 1; j >= 0; j--)
      if(g_journal[j].id == id)
         return j;
   return -1;
  }

// Sets the entry of `id` (a new one if needed, not following) and returns its index.
int QA_JournalSet(const string id, const string state, const long send_ms, const string symbol, const string side,
                  const double volume, const ulong order, const uint retcode, const string reason)
  {
   int j = QA_JournalFind(id);
   if(j < 0)
     {
      j = ArraySize(g_journal);
      ArrayResize(g_journal, j + 1);
      g_journal[j].id = id;
      g_journal[j].following = false;
      g_journal[j].follow_until = 0;
      g_journal[j].settle_at = 0;
      g_journal[j].cancel_sent = false;
     }
   g_journal[j].state = state;
   g_journal[j].send_ms = send_ms;
   g_journal[j].symbol = symbol;
   g_journal[j].side = side;
   g_journal[j].volume = volume;
   g_journal[j].order = order;
   g_journal[j].retcode = retcode;
   g_journal[j].reason = reason;
   return j;
  }

// Appends the line of entry j and flushes it to disk; false when it could not be written.
bool QA_JournalWrite(const int j)
  {
   if(g_journalFile == INVALID_HANDLE)
      return false;
   string reason = g_journal[j].reason;
   StringReplace(reason, "\t", " ");
   StringReplace(reason, "\r", " ");
   StringReplace(reason, "\n", " ");
   string line = "1\t" + g_journal[j].id + "\t" + g_journal[j].state + "\t" + IntegerToString(g_journal[j].send_ms)
                 + "\t" + g_journal[j].symbol + "\t" + g_journal[j].side + "\t" + QA_Num(g_journal[j].volume, 8)
                 + "\t" + IntegerToString((long)g_journal[j].order) + "\t" + IntegerToString((long)g_journal[j].retcode)
                 + "\t" + reason + "\r\n";
   ResetLastError();
   if(!FileSeek(g_journalFile, 0, SEEK_END) || FileWriteString(g_journalFile, line) == 0)
      return false;
   FileFlush(g_journalFile);
   return GetLastError() == 0;
  }

// Records the outcome of entry j. When the disk fails it is kept in memory (the order is sent).
void QA_JournalOutcome(const int j, const string state, const ulong order, const uint retcode, const string reason)
  {
   g_journal[j].state = state;
   if(order != 0)
      g_journal[j].order = order;
   g_journal[j].retcode = retcode;
   g_journal[j].reason = reason;
   if(!QA_JournalWrite(j))
      Print("QuantArbBridge: cannot journal ", g_journal[j].id, " (", state, "), error ", GetLastError());
  }

void QA_JournalParse(const string line)
  {
   string parts[];
   int n = StringSplit(line, '\t', parts);
   if((n != 9 && n != 10) || parts[0] != "1" || parts[1] == "")
      return;                                    // a torn or foreign line
   string state = parts[2];
   if(state != "sent" && state != "done" && state != "unknown" && state != "retry" && state != "rejected")
      return;
   QA_JournalSet(parts[1], state, StringToInteger(parts[3]), parts[4], parts[5], StringToDouble(parts[6]),
                 (ulong)StringToInteger(parts[7]), (uint)StringToInteger(parts[8]), (n == 10) ? parts[9] : "");
  }

void QA_EnsureFile(const string path)
  {
   if(FileIsExist(path, FILE_COMMON))
      return;
   int h = FileOpen(path, FILE_WRITE | FILE_TXT | FILE_ANSI | FILE_COMMON);
   if(h != INVALID_HANDLE)
      FileClose(h);
  }

// Rewrites the journal with the entries of the last two days (commands expire in seconds).
void QA_CompactJournal(const string path)
  {
   string tmp = path + ".tmp";
   int h = FileOpen(tmp, FILE_WRITE | FILE_TXT | FILE_ANSI | FILE_COMMON);
   if(h == INVALID_HANDLE)
      return;
   int journal = g_journalFile;
   g_journalFile = h;                            // QA_JournalWrite appends to the new file
   long keep_from = QA_NowMs() - QA_JOURNAL_KEEP_MS;
   for(int j = 0; j < ArraySize(g_journal); j++)
      if(g_journal[j].send_ms >= keep_from)
         QA_JournalWrite(j);
   FileClose(h);
   FileClose(journal);
   if(!FileMove(tmp, FILE_COMMON, path, FILE_COMMON | FILE_REWRITE))
      Print("QuantArbBridge: journal compaction failed, error ", GetLastError());
   g_journalFile = FileOpen(path, FILE_READ | FILE_WRITE | FILE_TXT | FILE_ANSI | FILE_COMMON | FILE_SHARE_READ);
  }

// Loads QuantArb\<terminal>.journal from the common folder and keeps it open for appending.
bool QA_OpenJournal()
  {
   string path = QA_DIR + InpTerminalId + ".journal";
   QA_EnsureFile(path);
   ResetLastError();
   g_journalFile = FileOpen(path, FILE_READ | FILE_WRITE | FILE_TXT | FILE_ANSI | FILE_COMMON | FILE_SHARE_READ);
   if(g_journalFile == INVALID_HANDLE)
     {
      Print("QuantArbBridge: cannot open the command journal ", path, " in the common folder, error ", GetLastError());
      return false;
     }
   int lines = 0;
   while(!FileIsEnding(g_journalFile))
     {
      QA_JournalParse(FileReadString(g_journalFile));
      lines++;
     }
   if(lines > QA_JOURNAL_COMPACT)
      QA_CompactJournal(path);
   return g_journalFile != INVALID_HANDLE;
  }

bool QA_ValidInstance(const string s)
  {
   int n = StringLen(s);
   if(n < 1 || n > 64)
      return false;
   for(int i = 0; i < n; i++)
     {
      ushort c = StringGetCharacter(s, i);
      if(!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-'))
         return false;
     }
   return true;
  }

// Takes QuantArb\<terminal>.lock in the common folder, opened without FILE_SHARE_*: while this
// EA runs, no other program can open it, so a second instance for this terminal id, in this
// terminal or another one on this machine, refuses to start (Windows releases the file if the
// terminal dies). It keeps the instance id sent in X-QA-Instance, so an EA restarted here takes
// its listener lease back at once; an instance elsewhere is refused by the listener (409).
bool QA_TakeLock()
  {
   string path = QA_DIR + InpTerminalId + ".lock";
   QA_EnsureFile(path);
   ResetLastError();
   g_lockFile = FileOpen(path, FILE_READ | FILE_WRITE | FILE_TXT | FILE_ANSI | FILE_COMMON);
   if(g_lockFile == INVALID_HANDLE)
     {
      Print("QuantArbBridge: another EA instance for terminal ", InpTerminalId, " runs on this machine (", path,
            " in the common folder is held, error ", GetLastError(), "); refusing to start.");
      return false;
     }
   string id = FileIsEnding(g_lockFile) ? "" : FileReadString(g_lockFile);
   StringTrimLeft(id);
   StringTrimRight(id);
   if(!QA_ValidInstance(id))
     {
      MathSrand((int)(GetMicrosecondCount() ^ (ulong)TimeLocal() ^ (ulong)AccountInfoInteger(ACCOUNT_LOGIN)));
      id = "ea-";
      for(int i = 0; i < 16; i++)
         id += StringFormat("%x", MathRand() % 16);
      FileSeek(g_lockFile, 0, SEEK_SET);
      FileWriteString(g_lockFile, id + "\r\n");
      FileFlush(g_lockFile);
     }
   g_instance = id;
   return true;
  }

//+------------------------------------------------------------------+
//| Orders and deals of a command                                    |
//+------------------------------------------------------------------+
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
          + ",\"swap\":" + QA_Num(HistoryDealGetDouble(deal, DEAL_SWAP), 8)
          + ",\"time_msc\":" + IntegerToString(time_msc) + "}";
  }

// The deals of entry j: our magic, and its order (DEAL_ORDER) or its id as the comment, in the
// history since shortly before it was sent (minutes, never days). `total` is their volume and
// `count` their number. With `report`, the ones not reported in this session (all of them when
// `force`) are reported; returns how many were.
int QA_ReportFills(const int j, const bool report, const bool force, double &total, int &count)
  {
   total = 0.0;
   count = 0;
   if(!HistorySelect(QA_ServerTime(g_journal[j].send_ms) - 60, TimeTradeServer() + 86400))
      return 0;
   string comment = StringSubstr(g_journal[j].id, 0, QA_COMMENT_MAX);
   ulong order = g_journal[j].order;
   string bodies[];
   int deals = HistoryDealsTotal();
   for(int i = 0; i < deals; i++)
     {
      ulong deal = HistoryDealGetTicket(i);
      if(deal == 0 || HistoryDealGetInteger(deal, DEAL_MAGIC) != (long)InpMagic)
         continue;
      if(!((order != 0 && (ulong)HistoryDealGetInteger(deal, DEAL_ORDER) == order)
           || HistoryDealGetString(deal, DEAL_COMMENT) == comment))
         continue;
      count++;
      total += HistoryDealGetDouble(deal, DEAL_VOLUME);
      if(report && (force || !QA_WasReported(deal)))
        {
         int m = ArraySize(bodies);
         ArrayResize(bodies, m + 1);
         bodies[m] = QA_FillJson(g_journal[j].id, deal);
         QA_MarkReported(deal);
        }
     }
   int n = ArraySize(bodies);
   for(int i = 0; i < n; i++)
      QA_Report("/mt5/fill", bodies[i]);
   return n;
  }

// At start: report again the fills of our recent deals (fills are idempotent), so that a fill
// lost between an ack and a crash or restart reaches quantarb. The journal names the command
// of each order; other deals go by their comment.
void QA_ResyncFills()
  {
   if(InpResyncMinutes <= 0)
      return;
   datetime now = TimeTradeServer();
   if(!HistorySelect(now - InpResyncMinutes * 60, now + 86400))
      return;
   string bodies[];
   int deals = HistoryDealsTotal();
   for(int i = 0; i < deals; i++)
     {
      ulong deal = HistoryDealGetTicket(i);
      if(deal == 0 || HistoryDealGetInteger(deal, DEAL_MAGIC) != (long)InpMagic)
         continue;
      ulong order = (ulong)HistoryDealGetInteger(deal, DEAL_ORDER);
      string id = HistoryDealGetString(deal, DEAL_COMMENT);
      for(int j = ArraySize(g_journal) - 1; j >= 0; j--)
         if(g_journal[j].order == order)
           {
            id = g_journal[j].id;
            break;
           }
      if(id == "")
         continue;
      int m = ArraySize(bodies);
      ArrayResize(bodies, m + 1);
      bodies[m] = QA_FillJson(id, deal);
      QA_MarkReported(deal);
     }
   for(int i = 0; i < ArraySize(bodies); i++)
      QA_Report("/mt5/fill", bodies[i]);
  }

bool QA_OrderActive(const ulong ticket)
  {
   return ticket != 0 && OrderSelect(ticket);
  }

// How much of a finished order filled (initial minus current volume); false when the order is
// not in the history (yet).
bool QA_FilledByOrder(const ulong ticket, double &filled)
  {
   filled = 0.0;
   if(ticket == 0 || !HistoryOrderSelect(ticket))
      return false;
   filled = HistoryOrderGetDouble(ticket, ORDER_VOLUME_INITIAL) - HistoryOrderGetDouble(ticket, ORDER_VOLUME_CURRENT);
   return true;
  }

// Removes the resting remainder of entry j's order (RETURN), once: the hedge is sized on what
// filled, so nothing may fill later at a stale price. Only a RETURN order that rests (placed,
// or partly filled) is removed; a market order the terminal still lists while the server
// processes it is left alone. true when the order is no longer active (removed, or finished
// meanwhile: then it is followed to the end).
bool QA_RemoveRest(const int j)
  {
   ulong ticket = g_journal[j].order;
   if(QA_OrderActive(ticket) && !g_journal[j].cancel_sent                  // OrderSelect'ed
      && OrderGetInteger(ORDER_TYPE_FILLING) == ORDER_FILLING_RETURN
      && (OrderGetInteger(ORDER_STATE) == ORDER_STATE_PLACED || OrderGetInteger(ORDER_STATE) == ORDER_STATE_PARTIAL))
     {
      g_journal[j].cancel_sent = true;
      MqlTradeRequest request;
      MqlTradeResult  result;
      ZeroMemory(request);
      ZeroMemory(result);
      request.action = TRADE_ACTION_REMOVE;
      request.order  = ticket;
      if(OrderSend(request, result) && result.retcode == TRADE_RETCODE_DONE)
         g_removed++;
      else
         PrintFormat("QuantArbBridge: removing the rest of order %I64u (%s) -> %u %s", ticket, g_journal[j].id,
                     result.retcode, QA_RetcodeName(result.retcode));
     }
   return !QA_OrderActive(ticket);
  }

void QA_Follow(const int j)
  {
   if(g_journal[j].following)
      return;
   ulong now = GetTickCount64();
   g_journal[j].following = true;
   g_journal[j].follow_until = now + (ulong)MathMax(1, InpFollowSec) * 1000;
   g_journal[j].settle_at = now + (ulong)MathMax(1, InpUnknownSettleSec) * 1000;
  }

// Acks a command whose order the trade server took. A resting remainder is removed first; an
// order that filled nothing is `rejected` (nothing executed), any other `accepted`, then its deals.
void QA_Conclude(const int j, const bool force)
  {
   string id = g_journal[j].id;
   QA_Follow(j);
   g_nextAccount = 0;                              // report the account after a trade
   double filled = 0.0, total = 0.0;
   int count = 0;
   bool nothing = false;
   if(QA_RemoveRest(j) && QA_FilledByOrder(g_journal[j].order, filled) && filled <= 1e-9)
     {
      QA_ReportFills(j, false, false, total, count);
      nothing = (count == 0);
     }
   if(nothing)
     {
      string reason = "its order " + IntegerToString((long)g_journal[j].order) + " filled nothing and was removed";
      g_rejected++;
      QA_JournalOutcome(j, "rejected", 0, g_journal[j].retcode, reason);
      g_journal[j].following = false;
      QA_Ack(id, "rejected", g_journal[j].retcode, reason);
      return;
     }
   QA_Ack(id, "accepted", (g_journal[j].retcode != 0) ? g_journal[j].retcode : TRADE_RETCODE_DONE, "");
   QA_ReportFills(j, true, force, total, count);
  }

// Whether order `ticket` belongs to another journal entry than j.
bool QA_Claimed(const ulong ticket, const int j)
  {
   for(int k = ArraySize(g_journal) - 1; k >= 0; k--)
      if(k != j && g_journal[k].order == ticket)
         return true;
   return false;
  }

// The order of entry j (sent, outcome unknown) on the trade server: its known ticket, or the
// order with its id as the comment, or else the one order of our magic, symbol, side and volume
// set up since it was sent that no other command claims (comments may be rewritten; one
// unknown outcome per symbol keeps this unambiguous). 0 when none; `finished` and `state` say
// whether it is in the history and in what ORDER_STATE.
ulong QA_FindOrder(const int j, bool &finished, long &state)
  {
   finished = false;
   state = 0;
   ulong known = g_journal[j].order;
   if(QA_OrderActive(known))
     {
      state = OrderGetInteger(ORDER_STATE);
      return known;
     }
   if(known != 0 && HistoryOrderSelect(known))
     {
      finished = true;
      state = HistoryOrderGetInteger(known, ORDER_STATE);
      return known;
     }
   string comment = StringSubstr(g_journal[j].id, 0, QA_COMMENT_MAX);
   long since_msc = g_journal[j].send_ms + QA_ServerMinusUtcMs() - 2000;
   long type = (g_journal[j].side == "buy") ? ORDER_TYPE_BUY : ORDER_TYPE_SELL;
   ulong alike = 0;
   int alikes = 0;
   bool alike_finished = false;
   long alike_state = 0;
   for(int i = OrdersTotal() - 1; i >= 0; i--)
     {
      ulong ticket = OrderGetTicket(i);            // also selects the order
      if(ticket == 0 || OrderGetInteger(ORDER_MAGIC) != (long)InpMagic || QA_Claimed(ticket, j))
         continue;
      if(OrderGetString(ORDER_COMMENT) == comment)
        {
         state = OrderGetInteger(ORDER_STATE);
         return ticket;
        }
      if(OrderGetString(ORDER_SYMBOL) == g_journal[j].symbol && OrderGetInteger(ORDER_TYPE) == type
         && MathAbs(OrderGetDouble(ORDER_VOLUME_INITIAL) - g_journal[j].volume) < 1e-9
         && OrderGetInteger(ORDER_TIME_SETUP_MSC) >= since_msc)
        {
         alike = ticket;
         alikes++;
         alike_finished = false;
         alike_state = OrderGetInteger(ORDER_STATE);
        }
     }
   if(HistorySelect((datetime)(since_msc / 1000), TimeTradeServer() + 86400))
     {
      for(int i = HistoryOrdersTotal() - 1; i >= 0; i--)
        {
         ulong ticket = HistoryOrderGetTicket(i);
         if(ticket == 0 || HistoryOrderGetInteger(ticket, ORDER_MAGIC) != (long)InpMagic || QA_Claimed(ticket, j))
            continue;
         if(HistoryOrderGetString(ticket, ORDER_COMMENT) == comment)
           {
            finished = true;
            state = HistoryOrderGetInteger(ticket, ORDER_STATE);
            return ticket;
           }
         if(HistoryOrderGetString(ticket, ORDER_SYMBOL) == g_journal[j].symbol
            && HistoryOrderGetInteger(ticket, ORDER_TYPE) == type
            && MathAbs(HistoryOrderGetDouble(ticket, ORDER_VOLUME_INITIAL) - g_journal[j].volume) < 1e-9
            && HistoryOrderGetInteger(ticket, ORDER_TIME_SETUP_MSC) >= since_msc)
           {
            alike = ticket;
            alikes++;
            alike_finished = true;
            alike_state = HistoryOrderGetInteger(ticket, ORDER_STATE);
           }
        }
     }
   if(alikes != 1)
      return 0;                                    // none, or ambiguous: not taken
   finished = alike_finished;
   state = alike_state;
   return alike;
  }

// Looks for the order of entry j, whose outcome is unknown; true once the outcome is known
// (then acked: `accepted` with its deals, or `rejected` when its order ended without one).
bool QA_Resolve(const int j)
  {
   bool finished = false;
   long state = 0;
   ulong ticket = QA_FindOrder(j, finished, state);
   if(ticket == 0)
      return false;
   g_journal[j].order = ticket;                    // its deals are found by DEAL_ORDER from now on
   double total = 0.0;
   int count = 0;
   QA_ReportFills(j, false, false, total, count);
   string prefix = (g_journal[j].reason != "") ? g_journal[j].reason : "outcome unknown";
   if(count == 0 && finished
      && (state == ORDER_STATE_CANCELED || state == ORDER_STATE_REJECTED || state == ORDER_STATE_EXPIRED))
     {
      string how = (state == ORDER_STATE_CANCELED) ? "canceled" : ((state == ORDER_STATE_REJECTED) ? "rejected" : "expired");
      string reason = prefix + ": its order " + IntegerToString((long)ticket) + " was " + how + " without a deal";
      g_rejected++;
      QA_JournalOutcome(j, "rejected", ticket, g_journal[j].retcode, reason);
      QA_Ack(g_journal[j].id, "rejected", g_journal[j].retcode, reason);
      return true;
     }
   uint rc = (count == 0) ? TRADE_RETCODE_PLACED
             : ((total >= g_journal[j].volume - 1e-9) ? TRADE_RETCODE_DONE : TRADE_RETCODE_DONE_PARTIAL);
   QA_JournalOutcome(j, "done", ticket, rc, "");
   QA_Conclude(j, false);
   return true;
  }

// One look at a followed command: resolve an unknown outcome (or, with no trace within
// InpUnknownSettleSec while connected, report it rejected), remove a resting remainder, report
// new deals; stop when its order is finished and all its deals are reported, or after InpFollowSec.
void QA_FollowOne(const int j)
  {
   if(!g_journal[j].following)
      return;
   ulong now = GetTickCount64();
   double total = 0.0, filled = 0.0;
   int count = 0;
   if(g_journal[j].state == "sent" || g_journal[j].state == "unknown")
     {
      if(!QA_Resolve(j) && now >= g_journal[j].settle_at && TerminalInfoInteger(TERMINAL_CONNECTED))
        {
         string reason = ((g_journal[j].reason != "") ? g_journal[j].reason : "outcome unknown")
                         + ": no order or deal appeared within " + IntegerToString((long)InpUnknownSettleSec * 1000) + " ms";
         g_rejected++;
         QA_JournalOutcome(j, "rejected", 0, g_journal[j].retcode, reason);
         QA_Ack(g_journal[j].id, "rejected", g_journal[j].retcode, reason);
        }
     }
   if(g_journal[j].state == "done" && g_journal[j].order != 0)
     {
      QA_RemoveRest(j);
      bool active = QA_OrderActive(g_journal[j].order);
      if(QA_ReportFills(j, true, false, total, count) > 0)
         g_nextAccount = 0;
      if(!active && QA_FilledByOrder(g_journal[j].order, filled) && total >= filled - 1e-9)
        {
         g_journal[j].following = false;
         return;
        }
     }
   else if(QA_ReportFills(j, true, false, total, count) > 0)
      g_nextAccount = 0;                           // a late deal of a command reported rejected
   if(now >= g_journal[j].follow_until)
     {
      g_journal[j].following = false;
      if(g_journal[j].state != "rejected")
         Print("QuantArbBridge: stopped following command ", g_journal[j].id, " (", g_journal[j].state, ")");
     }
  }

void QA_FollowAll()
  {
   for(int j = 0; j < ArraySize(g_journal); j++)
      if(g_journal[j].following)
         QA_FollowOne(j);
  }

// A command not in the journal that the trade server knows by its comment (an active or history
// order, or a deal, carrying the id: the journal was lost). Journals it (done, or rejected for an
// order cancelled without a deal) and returns its index; -1 when there is no trace.
int QA_Trace(const string id)
  {
   string comment = StringSubstr(id, 0, QA_COMMENT_MAX);
   ulong ticket = 0;
   bool finished = false;
   long state = 0, setup_msc = 0;
   string symbol = "", side = "";
   double volume = 0.0;
   for(int i = OrdersTotal() - 1; i >= 0 && ticket == 0; i--)
     {
      ulong t = OrderGetTicket(i);
      if(t == 0 || OrderGetInteger(ORDER_MAGIC) != (long)InpMagic || OrderGetString(ORDER_COMMENT) != comment)
         continue;
      ticket = t;
      symbol = OrderGetString(ORDER_SYMBOL);
      side = (OrderGetInteger(ORDER_TYPE) == ORDER_TYPE_BUY) ? "buy" : "sell";
      volume = OrderGetDouble(ORDER_VOLUME_INITIAL);
      setup_msc = OrderGetInteger(ORDER_TIME_SETUP_MSC);
     }
   datetime now = TimeTradeServer();
   if(!HistorySelect(now - InpLookbackMinutes * 60, now + 86400) && ticket == 0)
      return -1;
   for(int i = HistoryOrdersTotal() - 1; i >= 0 && ticket == 0; i--)
     {
      ulong t = HistoryOrderGetTicket(i);
      if(t == 0 || HistoryOrderGetInteger(t, ORDER_MAGIC) != (long)InpMagic || HistoryOrderGetString(t, ORDER_COMMENT) != comment)
         continue;
      ticket = t;
      finished = true;
      state = HistoryOrderGetInteger(t, ORDER_STATE);
      symbol = HistoryOrderGetString(t, ORDER_SYMBOL);
      side = (HistoryOrderGetInteger(t, ORDER_TYPE) == ORDER_TYPE_BUY) ? "buy" : "sell";
      volume = HistoryOrderGetDouble(t, ORDER_VOLUME_INITIAL);
      setup_msc = HistoryOrderGetInteger(t, ORDER_TIME_SETUP_MSC);
     }
   double filled = 0.0;
   int deals = 0;
   for(int i = 0; i < HistoryDealsTotal(); i++)
     {
      ulong deal = HistoryDealGetTicket(i);
      if(deal == 0 || HistoryDealGetInteger(deal, DEAL_MAGIC) != (long)InpMagic || HistoryDealGetString(deal, DEAL_COMMENT) != comment)
         continue;
      deals++;
      filled += HistoryDealGetDouble(deal, DEAL_VOLUME);
      if(ticket == 0)
        {
         ticket = (ulong)HistoryDealGetInteger(deal, DEAL_ORDER);
         symbol = HistoryDealGetString(deal, DEAL_SYMBOL);
         side = (HistoryDealGetInteger(deal, DEAL_TYPE) == DEAL_TYPE_BUY) ? "buy" : "sell";
         setup_msc = HistoryDealGetInteger(deal, DEAL_TIME_MSC);
        }
     }
   if(ticket == 0)
      return -1;
   if(volume <= 0.0)
      volume = filled;
   long send_ms = setup_msc - QA_ServerMinusUtcMs();
   int j;
   if(finished && deals == 0 && state == ORDER_STATE_CANCELED)
      j = QA_JournalSet(id, "rejected", send_ms, symbol, side, volume, ticket, 0,
                        "its order " + IntegerToString((long)ticket) + " was canceled without a deal");
   else
      j = QA_JournalSet(id, "done", send_ms, symbol, side, volume, ticket,
                        (deals == 0) ? TRADE_RETCODE_PLACED
                        : ((filled >= volume - 1e-9) ? TRADE_RETCODE_DONE : TRADE_RETCODE_DONE_PARTIAL), "");
   if(!QA_JournalWrite(j))
      Print("QuantArbBridge: cannot journal ", id, ", error ", GetLastError());
   return j;
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

// The filling modes a market order may use on `symbol` (MT5 Fill Policy): FOK only under
// Request and Instant execution; FOK and IOC as SYMBOL_FILLING_MODE allows under Market
// execution; and RETURN too under Exchange execution.
void QA_AllowedFillings(const string symbol, bool &fok, bool &ioc, bool &ret, string &execution)
  {
   long exe = SymbolInfoInteger(symbol, SYMBOL_TRADE_EXEMODE);
   long modes = SymbolInfoInteger(symbol, SYMBOL_FILLING_MODE);
   ret = (exe == SYMBOL_TRADE_EXECUTION_EXCHANGE);
   if(exe == SYMBOL_TRADE_EXECUTION_REQUEST || exe == SYMBOL_TRADE_EXECUTION_INSTANT)
     {
      fok = true;
      ioc = false;
      execution = (exe == SYMBOL_TRADE_EXECUTION_REQUEST) ? "request" : "instant";
      return;
     }
   fok = (modes & SYMBOL_FILLING_FOK) == SYMBOL_FILLING_FOK;
   ioc = (modes & SYMBOL_FILLING_IOC) == SYMBOL_FILLING_IOC;
   execution = ret ? "exchange" : "market";
  }

bool QA_FillingAllowed(const string mode, const bool fok, const bool ioc, const bool ret)
  {
   return (mode == "FOK" && fok) || (mode == "IOC" && ioc) || (mode == "RETURN" && ret);
  }

// The filling mode for this order, or false (with the reason) when none fits. With the default
// policy (auto) the command's mode is used when the symbol allows it, else FOK, IOC, RETURN: a
// fixed IOC would be refused on every Request/Instant-execution symbol (FOK only).
bool QA_ResolveFilling(const string symbol, const string wanted, ENUM_ORDER_TYPE_FILLING &filling, string &why)
  {
   bool fok = false, ioc = false, ret = false;
   string execution = "";
   QA_AllowedFillings(symbol, fok, ioc, ret, execution);
   string mode = wanted;
   if(InpFilling == QA_FILLING_FOK)
      mode = "FOK";
   else if(InpFilling == QA_FILLING_IOC)
      mode = "IOC";
   else if(InpFilling == QA_FILLING_RETURN)
      mode = "RETURN";
   if(!QA_FillingAllowed(mode, fok, ioc, ret))
     {
      if(InpFilling != QA_FILLING_AUTO)
        {
         why = "the symbol does not allow " + mode + " filling under " + execution + " execution";
         return false;
        }
      mode = fok ? "FOK" : (ioc ? "IOC" : (ret ? "RETURN" : ""));
      if(mode == "")
        {
         why = "the symbol allows no filling mode under " + execution + " execution";
         return false;
        }
     }
   filling = (mode == "FOK") ? ORDER_FILLING_FOK : ((mode == "IOC") ? ORDER_FILLING_IOC : ORDER_FILLING_RETURN);
   return true;
  }

// A refusal by the EA itself: no OrderSend happened, so retcode 0 (docs/mt5-protocol.md).
void QA_Refuse(const string id, const string reason)
  {
   g_rejected++;
   QA_Ack(id, "rejected", 0, reason);
  }

// What is known of a journaled command delivered again. It is never sent again.
void QA_ReportKnown(const int j, const bool force)
  {
   string state = g_journal[j].state;
   if(state == "sent" || state == "unknown")
     {
      if(!QA_Resolve(j))                             // QA_Resolve acks what it finds
        {
         QA_Follow(j);
         QA_Ack(g_journal[j].id, "unknown", g_journal[j].retcode,
                ((g_journal[j].reason != "") ? g_journal[j].reason : "sent") + "; never sent again");
        }
      return;
     }
   if(state == "rejected")
      QA_Ack(g_journal[j].id, "rejected", g_journal[j].retcode, g_journal[j].reason);
   else if(state == "done")
      QA_Conclude(j, force);
  }

// The first command on `symbol` whose outcome is unknown, or "": while there is one, no other is
// sent on that symbol, so a deal that appears is attributable to it whatever the broker did to
// the comment.
string QA_UnknownOn(const string symbol)
  {
   for(int j = ArraySize(g_journal) - 1; j >= 0; j--)
      if(g_journal[j].following && g_journal[j].symbol == symbol
         && (g_journal[j].state == "sent" || g_journal[j].state == "unknown"))
         return g_journal[j].id;
   return "";
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
   int j = QA_JournalFind(id);
   // 1. Already handled in this session: report again, never execute again.
   int handled = QA_HandledFind(id);
   if(handled >= 0)
     {
      g_duplicates++;
      QA_Report("/mt5/ack", g_handledAck[handled]);
      if(j < 0)
         j = QA_Trace(id);
      if(j >= 0)
        {
         double total = 0.0;
         int count = 0;
         QA_ReportFills(j, true, true, total, count);
        }
      return;
     }
   // 2. In the journal: it was sent (or about to be) before; never send it again.
   if(j >= 0 && g_journal[j].state != "retry")
     {
      g_duplicates++;
      QA_ReportKnown(j, true);
      return;
     }
   // 3. Not in the journal, but an order or deal on the trade server carries its id.
   if(j < 0)
     {
      j = QA_Trace(id);
      if(j >= 0)
        {
         g_duplicates++;
         QA_ReportKnown(j, true);
         return;
        }
     }
   // 4. Expired: refuse.
   long expires_msc = QA_JsonLong(obj, "expires_msc", 0);
   int retry = QA_RetryFind(id);
   if(expires_msc > 0 && QA_NowMs() > expires_msc)
     {
      g_expired++;
      uint last = (retry >= 0) ? g_retryCode[retry] : ((j >= 0) ? g_journal[j].retcode : 0);
      QA_RetryForget(id);
      QA_Ack(id, "expired", last, "expired before execution");
      return;
     }
   if(retry >= 0 && GetTickCount64() < g_retryAt[retry])
      return;   // back off after a transient failure; the command comes again

   // 5. Check it (refusals carry retcode 0: no OrderSend happened).
   string group_id = QA_JsonString(obj, "group_id", "");
   string kind = QA_JsonString(obj, "kind", "");
   string symbol = QA_JsonString(obj, "symbol", "");
   string side = QA_JsonString(obj, "side", "");
   double volume = QA_JsonDouble(obj, "volume", 0.0);
   double price = QA_JsonDouble(obj, "price", 0.0);
   long deviation_points = QA_JsonLong(obj, "deviation_points", 0);
   string filling_name = QA_JsonString(obj, "filling", "IOC");
   long magic = QA_JsonLong(obj, "magic", 0);
   ulong position = (ulong)QA_JsonLong(obj, "position", 0);

   if(kind != "open" && kind != "close")
     { QA_Refuse(id, "bad command: kind must be open or close"); return; }
   if(side != "buy" && side != "sell")
     { QA_Refuse(id, "bad command: side must be buy or sell"); return; }
   if(filling_name != "FOK" && filling_name != "IOC" && filling_name != "RETURN")
     { QA_Refuse(id, "bad command: filling must be FOK, IOC or RETURN"); return; }
   if(kind == "close" && position == 0)
     { QA_Refuse(id, "bad command: close needs a position ticket"); return; }
   if(kind == "open" && volume <= 0.0)
     { QA_Refuse(id, "bad command: volume must be > 0"); return; }
   if(price < 0.0 || deviation_points < 0)
     { QA_Refuse(id, "bad command: price and deviation_points must be >= 0"); return; }
   if(magic != 0 && magic != (long)InpMagic)
     { QA_Refuse(id, "magic " + IntegerToString(magic) + " is not the EA's " + IntegerToString((long)InpMagic)); return; }
   if(QA_SymbolIndex(symbol) < 0)
     { QA_Refuse(id, "symbol " + symbol + " is not one of the EA's symbols"); return; }
   MqlTick tick;
   if(!SymbolInfoTick(symbol, tick) || tick.bid <= 0.0 || tick.ask <= 0.0)
     { QA_Refuse(id, "no quote for " + symbol); return; }
   if(kind == "close")
     {
      if(!PositionSelectByTicket(position))
        { QA_Refuse(id, "position " + IntegerToString((long)position) + " not found"); return; }
      long ptype = PositionGetInteger(POSITION_TYPE);
      if(PositionGetString(POSITION_SYMBOL) != symbol
         || (ptype == POSITION_TYPE_BUY && side != "sell") || (ptype == POSITION_TYPE_SELL && side != "buy"))
        { QA_Refuse(id, "close must be the opposite of the position, on its symbol"); return; }
      double open_volume = PositionGetDouble(POSITION_VOLUME);
      if(volume <= 0.0 || volume > open_volume)
         volume = open_volume;                     // never more than is open
     }
   double step = SymbolInfoDouble(symbol, SYMBOL_VOLUME_STEP);
   if(step > 0.0)
     {
      double steps = volume / step;
      if(MathAbs(steps - MathRound(steps)) > 1e-6)
        { QA_Refuse(id, "volume is not a multiple of the lot step"); return; }
      volume = NormalizeDouble(MathRound(steps) * step, 8);
     }
   ENUM_ORDER_TYPE_FILLING filling = ORDER_FILLING_FOK;
   string why = "";
   if(!QA_ResolveFilling(symbol, filling_name, filling, why))
     { QA_Refuse(id, why); return; }

   // The price: under Market and Exchange execution the server ignores request.price and fills
   // wherever the market is, so a market already worse than the command's price by more than
   // its deviation is refused here. 0 means zero points (an exact price), not a default.
   long deviation = deviation_points;
   if(InpMaxDeviation >= 0 && deviation > InpMaxDeviation)
      deviation = InpMaxDeviation;
   double point = SymbolInfoDouble(symbol, SYMBOL_POINT);
   int digits = (int)SymbolInfoInteger(symbol, SYMBOL_DIGITS);
   double market = (side == "buy") ? tick.ask : tick.bid;
   if(price > 0.0 && point > 0.0)
     {
      double worse = (side == "buy") ? market - price : price - market;
      if(worse - deviation * point > point * 1e-6)
        {
         g_priceRefusals++;
         QA_Refuse(id, StringFormat("price moved: %s %s is %.0f points worse than the command's %s (deviation %I64d)",
                                    (side == "buy") ? "ask" : "bid", QA_Num(market, digits), worse / point,
                                    QA_Num(price, digits), deviation));
         return;
        }
     }
   string blocking = QA_UnknownOn(symbol);
   if(blocking != "")
     { QA_Refuse(id, "an order on " + symbol + " (command " + blocking + ") has an unknown outcome"); return; }
   // Under Request and Instant execution the server executes at request.price or requotes: send
   // the command's price, so the deviation is measured from what quantarb decided on.
   long exe = SymbolInfoInteger(symbol, SYMBOL_TRADE_EXEMODE);
   bool priced = (exe == SYMBOL_TRADE_EXECUTION_REQUEST || exe == SYMBOL_TRADE_EXECUTION_INSTANT);

   // 6. Journal it, then send it: a journaled id is never sent twice.
   j = QA_JournalSet(id, "sent", QA_NowMs(), symbol, side, volume, 0, 0, "");
   if(!QA_JournalWrite(j))
     {
      string reason = "cannot write the command journal (error " + IntegerToString(GetLastError()) + ")";
      g_journal[j].state = "rejected";
      g_journal[j].reason = reason;
      QA_Refuse(id, reason);
      return;
     }
   MqlTradeRequest request;
   MqlTradeResult  result;
   ZeroMemory(request);
   ZeroMemory(result);
   request.action       = TRADE_ACTION_DEAL;
   request.symbol       = symbol;
   request.volume       = volume;
   request.type         = (side == "buy") ? ORDER_TYPE_BUY : ORDER_TYPE_SELL;
   request.price        = (priced && price > 0.0) ? price : market;
   request.deviation    = (ulong)deviation;
   request.type_filling = filling;
   request.magic        = InpMagic;
   request.comment      = StringSubstr(id, 0, QA_COMMENT_MAX);   // a second way to find it again
   if(kind == "close")
      request.position  = position;

   ResetLastError();
   bool sent = OrderSend(request, result);
   g_executed++;
   uint rc = result.retcode;
   PrintFormat("QuantArbBridge: %s %s %s %s %.8g at %.8g (group %s, command price %.8g, deviation %I64d) -> %u %s deal %I64u order %I64u",
               kind, id, side, symbol, volume, request.price, group_id, price, deviation, rc, QA_RetcodeName(rc),
               result.deal, result.order);
   // 7. Its outcome.
   if(rc == TRADE_RETCODE_DONE || rc == TRADE_RETCODE_DONE_PARTIAL || rc == TRADE_RETCODE_PLACED)
     {
      QA_RetryForget(id);
      QA_JournalOutcome(j, "done", result.order, rc, "");
      QA_Conclude(j, false);                       // a RETURN remainder is removed; the ack; the deals
      QA_FollowOne(j);                             // followed until its order is done
      return;
     }
   if(rc == TRADE_RETCODE_TIMEOUT)
     {
      // The request may still execute: never send it again; find out what happened.
      g_unknown++;
      QA_JournalOutcome(j, "unknown", result.order, rc, "TIMEOUT");
      QA_Follow(j);
      g_nextAccount = 0;
      QA_Ack(id, "unknown", rc, "TIMEOUT; never sent again");
      return;
     }
   if(QA_IsTransient(rc))
     {
      QA_JournalOutcome(j, "retry", 0, rc, "");
      QA_RetryLater(id, rc);
      return;   // not acknowledged: quantarb delivers it again and it is retried until it expires
     }
   g_rejected++;
   string reason = QA_RetcodeName(rc);
   if(result.comment != "")
      reason += ": " + result.comment;
   if(!sent && rc == 0)
      reason = "OrderSend failed, error " + IntegerToString(GetLastError());
   QA_JournalOutcome(j, "rejected", 0, rc, reason);
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
                   + ",\"swap\":" + QA_Num(PositionGetDouble(POSITION_SWAP), 8)
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
   // 8 decimals, trailing zeros dropped: a BTC-denominated account is not rounded to cents.
   string body = "{\"balance\":" + QA_Num(AccountInfoDouble(ACCOUNT_BALANCE), 8)
                 + ",\"equity\":" + QA_Num(AccountInfoDouble(ACCOUNT_EQUITY), 8)
                 + ",\"margin_free\":" + QA_Num(AccountInfoDouble(ACCOUNT_MARGIN_FREE), 8)
                 + ",\"positions\":[" + positions + "]"
                 + ",\"margin_mode\":" + QA_JsonQuote(margin)
                 + ",\"trade_allowed\":" + (allowed ? "true" : "false") + "}";
   string response;
   QA_Http("POST", "/mt5/account", body, response);
  }

//+------------------------------------------------------------------+
//| Event handlers                                                   |
//+------------------------------------------------------------------+
void QA_CloseFiles()
  {
   if(g_journalFile != INVALID_HANDLE)
      FileClose(g_journalFile);
   if(g_lockFile != INVALID_HANDLE)
      FileClose(g_lockFile);                       // releases this terminal id for another instance
   g_journalFile = INVALID_HANDLE;
   g_lockFile = INVALID_HANDLE;
  }

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

   QA_AnchorClock();                               // waits for one second boundary, once
   g_lastGmt = 0;
   // One instance per terminal id on this machine, and the journal of what it sent.
   if(!QA_TakeLock())
      return INIT_FAILED;
   ArrayResize(g_journal, 0);
   if(!QA_OpenJournal())
     {
      QA_CloseFiles();
      return INIT_FAILED;
     }
   // Commands sent shortly before a restart are followed again; one whose OrderSend never
   // returned (the line says `sent` and nothing more) has an unknown outcome.
   long recent = QA_NowMs() - (long)MathMax(1, InpFollowSec) * 1000;
   for(int j = 0; j < ArraySize(g_journal); j++)
     {
      if(g_journal[j].send_ms < recent)
         continue;
      if(g_journal[j].state == "sent")
         QA_JournalOutcome(j, "unknown", 0, 0, "the EA stopped during OrderSend");
      if(g_journal[j].state == "unknown" || g_journal[j].state == "done")
         QA_Follow(j);
     }
   g_resyncDone = false;
   g_nextAccount = 0;
   g_standby = false;
   g_httpBlocked = false;
   g_httpDownUntil = 0;
   if(!EventSetMillisecondTimer(InpTimerMs))
     {
      Print("QuantArbBridge: EventSetMillisecondTimer failed, error ", GetLastError());
      QA_CloseFiles();
      return INIT_FAILED;
     }
   PrintFormat("QuantArbBridge: terminal %s (instance %s) -> %s, %d symbols, magic %I64u, timer %d ms, %d journaled commands",
               InpTerminalId, g_instance, g_baseUrl, count, InpMagic, InpTimerMs, ArraySize(g_journal));
   return INIT_SUCCEEDED;
  }

void OnDeinit(const int reason)
  {
   EventKillTimer();
   QA_CloseFiles();
   PrintFormat("QuantArbBridge: stopped (reason %d): ticks %I64d, commands %I64d, executed %I64d, duplicates %I64d, "
               + "expired %I64d, rejected %I64d, unknown %I64d, acks %I64d, fills %I64d, http errors %I64d, unsent reports %d",
               reason, g_ticksSent, g_commandsSeen, g_executed, g_duplicates, g_expired, g_rejected, g_unknown, g_acks,
               g_fills, g_httpErrors, ArraySize(g_outPath));
   Comment("");
  }

void OnTimer()
  {
   g_httpBlocked = false;
   QA_CheckClock();
   if(!g_resyncDone)
     {
      g_resyncDone = true;
      QA_ResyncFills();
     }
   QA_FlushOutbox(false);

   // Ticks that changed ride one POST; its answer carries the pending commands. With nothing
   // to send, poll without waiting: WebRequest blocks, so the EA never long-polls. After a
   // request without an answer QA_Http tries nothing more in this timer event.
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
   if(status != 409 && (status < 200 || status >= 300))
      status = QA_Http("GET", "/mt5/commands?wait_ms=0", "", response);

   if(status >= 200 && status < 300)
     {
      string commands[];
      int n = QA_JsonArrayObjects(response, "commands", commands);
      for(int i = 0; i < n; i++)
         QA_HandleCommand(commands[i]);
     }

   QA_FollowAll();

   ulong now = GetTickCount64();
   if(now >= g_nextAccount && !g_httpBlocked)
     {
      g_nextAccount = now + (ulong)MathMax(1, InpAccountEverySec) * 1000;
      QA_PostAccount();
      Comment(StringFormat("QuantArbBridge %s (%s%s) -> %s\nticks %I64d  commands %I64d  executed %I64d  duplicates %I64d\n"
                           + "expired %I64d  rejected %I64d  unknown %I64d  http errors %I64d  unsent reports %d",
                           InpTerminalId, g_instance, g_standby ? ", standing by: another instance holds the terminal" : "",
                           g_baseUrl, g_ticksSent, g_commandsSeen, g_executed, g_duplicates,
                           g_expired, g_rejected, g_unknown, g_httpErrors, ArraySize(g_outPath)));
     }
  }
//+------------------------------------------------------------------+
