#include "reason.h"

#define GW_REASON_INFO(n, http, grpc, drop) [GW_R_##n] = {#n, http, grpc, drop},
const gw_reason_info gw_reasons[GW_N_REASONS] = {GW_REASONS(GW_REASON_INFO)};
#undef GW_REASON_INFO

gw_reason gw_reason_of_errcode(ing_errcode code)
{
    switch (code) {
    case ING_ERR_MALFORMED_JSON: return GW_R_malformed_json;
    case ING_ERR_MALFORMED_PROTOBUF: return GW_R_malformed_protobuf;
    case ING_ERR_INVALID_EVENT: return GW_R_invalid_event;
    case ING_ERR_TOO_LARGE: return GW_R_too_large;
    case ING_ERR_TOO_MANY_EVENTS: return GW_R_too_many_events;
    case ING_ERR_NONE: break;
    }
    return GW_R_internal; /* an error without a code is a bug of ours, not the client's */
}
