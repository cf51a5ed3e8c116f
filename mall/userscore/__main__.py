"""`python -m mall.userscore -f mall/etc/userscore.yaml`: run the user-score rpc."""

from mall.common.config import UserScoreConf
from mall.common.main import rpc_main
from mall.userscore.service import build

if __name__ == "__main__":
    rpc_main(UserScoreConf, "mall/etc/userscore.yaml", build)
