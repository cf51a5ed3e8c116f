"""`python -m mall.user -f mall/etc/user.yaml`: run the user rpc."""

from mall.common.config import UserConf
from mall.common.main import rpc_main
from mall.user.service import build

if __name__ == "__main__":
    rpc_main(UserConf, "mall/etc/user.yaml", build)
